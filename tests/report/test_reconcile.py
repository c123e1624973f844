"""The reconciler's classification and aggregation, on records built exactly as the worker builds them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pipeline.audio.quality import QualityReport
from pipeline.errors import ApiError, BudgetExceededError, InputError, PipelineError, RejectedError, summarize_rejection
from pipeline.manifest.load import ManifestEntry, Shard, load_manifest, parse_manifest
from pipeline.report.reconcile import JobResult, RunReport, classify
from pipeline.report.text import CSV_COLUMNS, report_dict, write_csv
from pipeline.run.retry import retry_lines, write_retry_manifests
from pipeline.states import LEDGER_STATES, JobState
from pipeline.storage.examples import example_failure, example_identity, example_provenance
from pipeline.storage.records import FailureRecord, JobIdentity, ProvenanceRecord

REJECT_DETAIL = [{"loc": ["body", "voice_settings", "stability"], "msg": "Input should be less than or equal to 1",
                  "type": "less_than_equal"}]


def line(shard: str, number: int, bucket: str = "out-bucket", **extra: Any) -> dict[str, Any]:
    return {"input": f"s3://in-bucket/{shard}/{number}.wav", "output": f"s3://{bucket}/{shard}/{number}.mp3",
            "voice_id": "voice1", **extra}


def make_shard(name: str, lines: list[dict[str, Any] | str]) -> Shard:
    text = "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines)
    return parse_manifest(text.encode(), name)


def identity(entry: ManifestEntry) -> JobIdentity:
    return example_identity(job_id=entry.job_id, shard=entry.shard, line=entry.line, input_uri=entry.job.input,
                            output_uri=entry.output, manifest_id=entry.job.id, metadata=entry.job.metadata)


def quality(drift_ms: float = 12.0, lufs: float | None = -20.0, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    return QualityReport(duration_in_s=3.0, duration_out_s=3.0 + drift_ms / 1000, drift_ms=drift_ms, lufs=lufs,
                         peak_dbfs=-1.5, clipped_samples=0, leading_silence_s=0.1, trailing_silence_s=0.2,
                         flags=flags).to_dict()


def provenance(entry: ManifestEntry, *, credits: float = 50.0, finished_at: str = "2025-03-01T10:00:30+00:00",
               drift_ms: float = 12.0, lufs: float | None = -20.0, flags: tuple[str, ...] = ()) -> ProvenanceRecord:
    """A provenance record as the worker writes it."""
    return example_provenance(identity(entry), credits=credits, finished_at=finished_at,
                              quality=quality(drift_ms, lufs, flags), params=entry.job.request_params())


def failure(entry: ManifestEntry, error: PipelineError, *, credits: float = 0.0,
            at: str = "2025-03-01T10:01:10+00:00") -> FailureRecord:
    """A failure record as the worker writes it; a deferred job made no request."""
    return example_failure(identity(entry), error, credits=credits, at=at)


def rejected_error() -> RejectedError:
    return RejectedError("the API refused the request (422)", detail=REJECT_DETAIL, request_id="req-422")


def result(shard: Shard, index: int, *, output: bool = False, committed: bool = False,
           prov: ProvenanceRecord | dict[str, Any] | None = None,
           fail: FailureRecord | dict[str, Any] | None = None) -> JobResult:
    """Classify from records as S3 holds them (stored dicts; a dict given is stored as is, odd ones included)."""
    entry = shard.entries[index]
    return classify(entry, where=f"{shard.label}:{entry.line}", output_exists=output, committed=committed,
                    provenance=prov if prov is None or isinstance(prov, dict) else prov.to_dict(),
                    failure=fail if fail is None or isinstance(fail, dict) else fail.to_dict())


# --- classification

def test_every_state_from_the_records() -> None:
    shard = make_shard("a.jsonl", [line("a", n) for n in range(1, 9)])
    e = shard.entries
    ok = result(shard, 0, output=True, committed=True, prov=provenance(e[0], flags=("clipping",)))
    both = result(shard, 1, output=True, committed=True, prov=provenance(e[1]),
                  fail=failure(e[1], InputError("input s3://x does not exist", reason="missing_input")))
    failed = result(shard, 2, fail=failure(e[2], ApiError("voice not found", status=404, request_id="req-404"),
                                            credits=0.0))
    rejected = result(shard, 3, fail=failure(e[3], rejected_error()))
    deferred = result(shard, 4, fail=failure(e[4], BudgetExceededError("the run's budget of 100 credits is spent")))
    orphan = result(shard, 5, output=True)
    missing = result(shard, 6)
    failed_with_output = result(shard, 7, output=True, fail=failure(e[7], InputError("not audio", reason="not_audio")))

    assert ok.state is JobState.SUCCEEDED and ok.credits == 50.0 and ok.flags == ["clipping"] and ok.drift_ms == 12.0
    assert ok.finished_at is not None and ok.finished_at.isoformat() == "2025-03-01T10:00:30+00:00"
    assert both.state is JobState.SUCCEEDED and both.reason is None  # a success wins over a stale failure record
    assert (failed.state, failed.reason, failed.http_status, failed.request_id, failed.error_class) == (
        JobState.FAILED, "http_404", 404, "req-404", "ApiError")
    assert rejected.state is JobState.REJECTED and rejected.http_status == 422
    assert rejected.message == "voice_settings.stability: Input should be less than or equal to 1"
    assert deferred.state is JobState.DEFERRED and deferred.reason == "budget"
    assert orphan.state is JobState.ORPHAN and orphan.output_exists
    assert missing.state is JobState.MISSING and not missing.output_exists and missing.finished_at is None
    assert failed_with_output.state is JobState.FAILED and failed_with_output.reason == "not_audio"
    assert failed.where == "a.jsonl:3"


def test_a_success_not_read_still_counts_and_an_unreadable_failure_record_is_a_failure() -> None:
    shard = make_shard("a.jsonl", [line("a", 1), line("a", 2)])
    unread = result(shard, 0, output=True, committed=True)
    assert unread.state is JobState.SUCCEEDED and unread.credits == 0.0 and unread.quality == {}
    odd = result(shard, 1, fail={"schema": "something-else", "status": "failed"})
    assert odd.state is JobState.FAILED and odd.reason == "unreadable_record"
    assert "s3://out-bucket/a/2.mp3.failure.json" in (odd.message or "")


def test_rejection_summaries() -> None:
    assert summarize_rejection(REJECT_DETAIL) == "voice_settings.stability: Input should be less than or equal to 1"
    two = [{"loc": ["body", "audio"], "msg": "field required"}, {"loc": ["query", "output_format"], "msg": "bad"}]
    assert summarize_rejection(two) == "audio: field required; query.output_format: bad"
    assert summarize_rejection({"status": "invalid_voice", "message": "voice is not for STS"}) == \
        "voice is not for STS"
    assert summarize_rejection(None, "the API refused") == "the API refused"
    assert summarize_rejection([]) == "rejected by the API (422) without a detail"


# --- aggregation

def _run() -> RunReport:
    """Two shards: a.jsonl (2 ok, 1 failed missing_input, 1 rejected, 1 missing, 1 invalid line), b.jsonl (1 ok with
    a flag, 1 failed missing_input, 1 deferred, 1 orphan)."""
    a = make_shard("a.jsonl", [line("a", 1), line("a", 2), line("a", 3), line("a", 4), line("a", 5),
                               {**line("a", 6), "voice_id": "bad voice!"}])
    b = make_shard("b.jsonl", [line("b", 1), line("b", 2), line("b", 3), line("b", 4)])
    ea, eb = a.entries, b.entries
    missing_input = InputError("input does not exist: check the manifest line's URI", reason="missing_input")
    results = [
        result(a, 0, output=True, committed=True, prov=provenance(ea[0], credits=50, drift_ms=10, lufs=-20)),
        result(a, 1, output=True, committed=True,
               prov=provenance(ea[1], credits=25.5, drift_ms=30, lufs=-22, finished_at="2025-03-01T10:01:05+00:00")),
        result(a, 2, fail=failure(ea[2], missing_input, at="2025-03-01T10:01:40+00:00")),
        result(a, 3, fail=failure(ea[3], rejected_error(), credits=0.0)),
        result(a, 4),
        result(b, 0, output=True, committed=True,
               prov=provenance(eb[0], credits=40, drift_ms=80, lufs=-8, flags=("duration_drift", "too_loud"))),
        result(b, 1, fail=failure(eb[1], missing_input)),
        result(b, 2, fail=failure(eb[2], BudgetExceededError("budget spent"))),
        result(b, 3, output=True),
    ]
    return RunReport(shards=[a, b], results=results, run_id="run-1")


def test_per_shard_and_total_counts_and_cost() -> None:
    report = _run()
    a, b = report.shard_summaries()
    assert (a.name, a.lines, a.invalid, a.jobs) == ("a.jsonl", 6, 1, 5)
    assert [a.counts[o] for o in LEDGER_STATES] == [2, 1, 1, 0, 0, 1, 0]
    assert [b.counts[o] for o in LEDGER_STATES] == [1, 1, 0, 1, 1, 0, 0]
    assert (a.credits, b.credits) == (75.5, 40.0)
    total = report.totals()
    assert (total.lines, total.jobs, total.invalid, total.credits, total.requests) == (10, 9, 1, 115.5, 6)
    assert not report.all_succeeded


def test_groups_flags_and_throughput() -> None:
    report = _run()
    [failed] = report.groups(JobState.FAILED)
    assert (failed.key, failed.count, [r.where for r in failed.results]) == (
        "missing_input", 2, ["a.jsonl:3", "b.jsonl:2"])
    [rejected] = report.groups(JobState.REJECTED)
    assert rejected.key == "voice_settings.stability: Input should be less than or equal to 1"
    assert [r.where for r in report.orphans] == ["b.jsonl:4"]
    assert report.flag_counts() == {"duration_drift": 1, "too_loud": 1}
    assert sorted(report.measured("lufs")) == [-22.0, -20.0, -8.0]
    per_minute = [(m.strftime("%H:%M"), sum(c.values())) for m, c in report.throughput()]
    assert per_minute == [("10:00", 2), ("10:01", 5)]


def test_json_report_shape() -> None:
    data = report_dict(_run())
    assert data["totals"] == {"lines": 10, "jobs": 9, "succeeded": 3, "failed": 2, "rejected": 1, "deferred": 1,
                              "orphan": 1, "missing": 1, "cancelled": 0, "invalid": 1, "credits": 115.5,
                              "requests": 6}
    assert data["failures"][0]["reason"] == "missing_input" and data["failures"][0]["count"] == 2
    assert [e["where"] for e in data["failures"][0]["examples"]] == ["a.jsonl:3", "b.jsonl:2"]
    assert data["rejected"][0]["examples"][0]["request_id"] == "req-422"
    assert data["deferred"][0]["reason"] == "budget"
    assert data["missing"] == [{"where": "a.jsonl:5", "job_id": _run().results[4].entry.job_id,
                                "output": "s3://out-bucket/a/5.mp3"}]
    assert data["invalid"][0]["where"] == "a.jsonl:6" and data["invalid"][0]["field"] == "voice_id"
    assert data["quality"]["flags"] == {"duration_drift": 1, "too_loud": 1}
    assert data["quality"]["drift_ms"] == {"count": 3, "min": 10.0, "median": 30.0, "p95": 80.0, "max": 80.0}
    assert data["cost"] == {"credits": 115.5, "requests": 6, "by_shard": {"a.jsonl": 75.5, "b.jsonl": 40.0}}
    assert data["all_succeeded"] is False
    json.dumps(data)


def test_all_succeeded_needs_every_line() -> None:
    shard = make_shard("c.jsonl", [line("c", 1)])
    ok = result(shard, 0, output=True, committed=True, prov=provenance(shard.entries[0]))
    assert RunReport(shards=[shard], results=[ok]).all_succeeded
    bad = make_shard("d.jsonl", [line("d", 1), {"input": "nope"}])
    ok_d = result(bad, 0, output=True, committed=True, prov=provenance(bad.entries[0]))
    assert not RunReport(shards=[bad], results=[ok_d]).all_succeeded  # the invalid line never succeeded


# --- retry manifests and CSV

def test_retry_selection_and_exact_manifest_lines(tmp_path: Path) -> None:
    report = _run()
    chosen = report.to_retry()
    assert [r.where for r in chosen] == ["a.jsonl:3", "a.jsonl:5", "b.jsonl:2", "b.jsonl:3", "b.jsonl:4"]
    assert [r.where for r in report.to_retry(include_rejected=True, shards=["a.jsonl"])] == [
        "a.jsonl:3", "a.jsonl:4", "a.jsonl:5"]
    assert retry_lines(chosen) == {"a.jsonl": [line("a", 3), line("a", 5)],
                                   "b.jsonl": [line("b", 2), line("b", 3), line("b", 4)]}
    written = write_retry_manifests(f"{tmp_path}/retry/", chosen)
    assert written == [tmp_path / "retry" / "a.jsonl", tmp_path / "retry" / "b.jsonl"]
    assert (tmp_path / "retry" / "a.jsonl").read_text().splitlines() == [json.dumps(line("a", 3)),
                                                                          json.dumps(line("a", 5))]
    again = load_manifest(tmp_path / "retry" / "b.jsonl")
    assert not again.problems and [e.job_id for e in again.entries] == [r.entry.job_id for r in chosen[2:]]
    one = write_retry_manifests(tmp_path / "all.csv", chosen)
    back = load_manifest(one[0])
    assert not back.problems and [e.job_id for e in back.entries] == [r.entry.job_id for r in chosen]
    assert write_retry_manifests(tmp_path / "none.jsonl", []) == []


def test_retry_lines_keep_the_users_own_line_from_a_csv_shard(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text("input,voice_id,voice_settings.stability,metadata\n"
                      "s3://in-bucket/c/1.wav,v1,0.5,\"{\"\"speaker\"\": \"\"ann\"\"}\"\n"
                      "s3://in-bucket/c/2.wav,v1,0.25,\n")
    shard = load_manifest(source, output_prefix="s3://out-bucket/c")
    report = RunReport(shards=[shard], results=[result(shard, 0), result(shard, 1)])
    [written] = write_retry_manifests(f"{tmp_path}/retry/", report.to_retry())
    again = load_manifest(written, output_prefix="s3://out-bucket/c")
    assert written.name == "c.csv" and not again.problems
    assert [e.job_id for e in again.entries] == [e.job_id for e in shard.entries]
    assert [e.output for e in again.entries] == [e.output for e in shard.entries]


def test_csv_has_a_row_per_line(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    write_csv(_run(), path)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 10
    assert [r["state"] for r in rows] == ["succeeded", "succeeded", "failed", "rejected", "missing", "succeeded",
                                          "failed", "deferred", "orphan", "invalid"]
    assert rows[0]["credits"] == "50.0" and rows[0]["drift_ms"] == "10" and rows[0]["lufs"] == "-20"
    assert rows[5]["flags"] == "duration_drift too_loud" and rows[3]["reason"] == "rejected"
    assert rows[9]["shard"] == "a.jsonl" and rows[9]["line"] == "6" and rows[9]["reason"] == "voice_id"
