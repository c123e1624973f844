"""results.jsonl and errors.jsonl built on the in-memory S3: one line per manifest line, the non-successes, in
shard and line order, with what scripts need (the manifest's id, request ids, the API's detail)."""

from __future__ import annotations

import json
from typing import Any

from pipeline.errors import RejectedError, RunCancelled
from pipeline.report.reconcile import reconcile
from pipeline.report.results import write_results
from pipeline.s3uri import S3Uri
from pipeline.storage.examples import example_failure, example_provenance
from pipeline.storage.memory import MemoryS3
from pipeline.storage.records import commit, record_failure
from pipeline.storage.s3 import Storage
from tests.report.test_reconcile import REJECT_DETAIL, identity, line, make_shard


def _read(storage: Storage, uri: S3Uri) -> list[dict[str, Any]]:
    return [json.loads(text) for text in storage.get_bytes(uri).decode().splitlines()]


def test_result_files_hold_every_line_and_exactly_the_non_successes() -> None:
    storage = Storage(MemoryS3())
    storage.ensure_bucket("out-bucket")
    b = make_shard("b.jsonl", [line("b", 1, id="b-one"), line("b", 2), "{not json", line("b", 4)])
    a = make_shard("a.jsonl", [line("a", 1, id="a-one")])
    done, rejected, cancelled = b.entries
    commit(storage, S3Uri.parse(done.output), example_provenance(identity(done)))
    record_failure(storage, S3Uri.parse(rejected.output), example_failure(
        identity(rejected), RejectedError("the API refused the request (422)", detail=REJECT_DETAIL,
                                          request_id="req-422")))
    record_failure(storage, S3Uri.parse(cancelled.output),
                   example_failure(identity(cancelled), RunCancelled("the run was cancelled")))
    report = reconcile(storage, [b, a], cancelled=True)
    results_uri, errors_uri = write_results(storage, S3Uri("out-bucket", "runs/run-1"), report)
    assert str(results_uri) == "s3://out-bucket/runs/run-1/results.jsonl"
    results, errors = _read(storage, results_uri), _read(storage, errors_uri)
    assert [(r["shard"], r["line"], r["state"]) for r in results] == [
        ("a.jsonl", 1, "cancelled"), ("b.jsonl", 1, "succeeded"), ("b.jsonl", 2, "rejected"),
        ("b.jsonl", 3, "invalid"), ("b.jsonl", 4, "cancelled")]
    assert results[0]["id"] == "a-one" and results[1]["id"] == "b-one" and results[1]["job_id"] == done.job_id
    assert results[1]["request_ids"] and results[1]["durations"]["input_s"] == 3.0 and results[1]["credits"] == 50
    assert results[1]["output"] == done.output
    assert [(e["shard"], e["line"]) for e in errors] == [(r["shard"], r["line"]) for r in results
                                                         if r["state"] != "succeeded"]
    by_line = {(e["shard"], e["line"]): e for e in errors}
    assert by_line[("b.jsonl", 2)]["detail"] == REJECT_DETAIL and by_line[("b.jsonl", 2)]["http_status"] == 422
    assert by_line[("b.jsonl", 2)]["request_id"] == "req-422"
    assert by_line[("b.jsonl", 4)]["reason"] == "cancelled" and by_line[("a.jsonl", 1)]["reason"] == "cancelled"
    assert by_line[("b.jsonl", 3)]["reason"] == "invalid" and by_line[("b.jsonl", 3)]["message"]


def test_a_secret_in_the_api_detail_is_redacted() -> None:
    from pipeline.report.results import _detail

    assert _detail({"msg": "fine"}) == {"msg": "fine"}
    leaked = _detail({"msg": "key sk_" + "a" * 40 + " refused"})
    assert isinstance(leaked, str) and "a" * 40 not in leaked
