"""Plan, retry and reconcile over the in-memory S3: what is done is skipped, what is not is re-run with its own line."""

from __future__ import annotations

import json
from typing import Any

from pipeline.config import Settings
from pipeline.errors import InputError, RejectedError
from pipeline.manifest.load import ManifestLimits, Shard, parse_manifest
from pipeline.report.reconcile import reconcile
from pipeline.run.plan import make_plan
from pipeline.run.retry import plan_retry
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.examples import example_failure, example_identity, example_provenance
from pipeline.storage.memory import memory_storage
from pipeline.storage.records import commit, record_failure
from pipeline.storage.s3 import Storage

VOICE = "BKkWQENix2VWeAv6YV5R"


def _shard(lines: list[dict[str, Any]], name: str = "night.jsonl") -> Shard:
    return parse_manifest("".join(json.dumps(line) + "\n" for line in lines).encode(), name)


def _lines(n: int) -> list[dict[str, Any]]:
    return [{"input": f"s3://in-bucket/clip-{i}.pcm", "voice_id": VOICE, "output": f"s3://out-bucket/night/{i}.mp3",
             "id": f"clip-{i}"} for i in range(n)]


def _finish(storage: Storage, shard: Shard) -> None:
    """Line 1 succeeded, line 2 failed (not audio), line 3 was rejected; lines 4 and 5 never ran."""
    for i in range(5):
        storage.put_bytes(S3Uri("in-bucket", f"clip-{i}.pcm"), b"\0\0" * 16000 * (i + 1))  # i + 1 seconds of raw PCM
    first, second, third = (S3Uri.parse(e.output) for e in shard.entries[:3])
    storage.put_bytes(first, b"ID3audio")
    commit(storage, first, example_provenance(example_identity(output_uri=str(first)), credits=16.7,
                                              duration_s=1.0))
    record_failure(storage, second, example_failure(example_identity(), InputError("not audio", reason="not_audio")))
    record_failure(storage, third, example_failure(example_identity(), RejectedError("no", detail=[])))


def test_plan_skips_what_is_committed_and_sizes_raw_pcm_from_its_length() -> None:
    storage = memory_storage("in-bucket", "out-bucket")
    shard = _shard(_lines(5))
    _finish(storage, shard)
    plan = make_plan(storage, [shard], Settings(), concurrency=2)
    assert (plan.jobs, plan.skipped, plan.to_run) == (5, 1, 4)
    assert plan.audio_seconds == 2 + 3 + 4 + 5  # lines 2-5 hold 2..5 s of 16 kHz PCM
    assert plan.basis == "history (1 jobs)" and plan.shards[0].unprobed == []


def test_reconcile_and_retry_pick_the_failed_and_the_missing_with_their_own_lines() -> None:
    storage = memory_storage("in-bucket", "out-bucket")
    shard = _shard(_lines(5))
    _finish(storage, shard)
    report = reconcile(storage, [shard])
    assert [r.state for r in report.results] == [JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED,
                                                JobState.MISSING, JobState.MISSING]
    retry = plan_retry(storage, [shard], run_id=None, output_prefix=None, limits=ManifestLimits())
    assert [r.entry.line for r in retry.chosen] == [2, 4, 5] and retry.rejected_left_out == 1
    assert [e.job_id for e in retry.entries] == [shard.entries[i].job_id for i in (1, 3, 4)]
    assert [json.loads(line)["id"] for line in retry.manifests["night.jsonl"].splitlines()] == [
        "clip-1", "clip-3", "clip-4"]
    with_rejected = plan_retry(storage, [shard], run_id=None, output_prefix=None, limits=ManifestLimits(),
                               include_rejected=True)
    assert [r.entry.line for r in with_rejected.chosen] == [2, 3, 4, 5] and with_rejected.rejected_left_out == 0
