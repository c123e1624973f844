"""At-least-once delivery with fast recovery: the visibility heartbeat (workers/heartbeat.py) on real Celery + Redis.

- a job that runs three times longer than the visibility timeout is started exactly once;
- a worker SIGKILLed mid-stream loses nothing: its job restarts on another worker within 90 s and leaves exactly one
  output and one provenance record (counted as object versions on a versioned bucket).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from pipeline.embedded import LocalStack
from tests.support import VOICES, lane, write_input, write_jsonl

FAST_REDELIVERY = {"STS_VISIBILITY_TIMEOUT_S": "8", "STS_HEARTBEAT_INTERVAL_S": "2", "STS_RESTORE_INTERVAL_S": "1",
                   "STS_LEASE_S": "6"}


def _stats(url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{url}/_admin/stats", timeout=5).json()


def _wait_until(predicate, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _one_job(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    source = write_input(tmp / "in.wav", 2.0)
    s3.upload_file(str(source), bucket, "in/clip.wav")
    line = {"input": f"s3://{bucket}/in/clip.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
            "output": f"s3://{bucket}/out/clip.pcm"}
    return write_jsonl(tmp / "one.jsonl", [line])


def _versions(s3, bucket: str, key: str) -> int:  # type: ignore[no-untyped-def]
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == key)


@pytest.fixture
def slow_sts(stack: LocalStack, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private offline server whose every answer takes at least 24 s (three visibility timeouts)."""
    with LocalStack(workdir=tmp_path / "slow") as own:
        own.start_sts("--latency-fixed", "24")
        yield own.sts_url


def test_a_job_longer_than_the_visibility_timeout_runs_once(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                            slow_sts: str) -> None:
    manifest = _one_job(s3, tmp_path, bucket)
    with lane(stack, STS_API_BASE_URL=slow_sts, **FAST_REDELIVERY) as test_lane:
        test_lane.start_worker(concurrency=2)
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "120")
        assert result.returncode == 0, result.stderr[-2000:]
        log = test_lane.workers[0].log_path.read_text()
    assert _stats(slow_sts)["requests_total"] == 1
    assert len(re.findall(r"Task sts\.convert\[[^\]]+\] received", log)) == 1
    assert _versions(s3, bucket, "out/clip.pcm") == 1
    assert _versions(s3, bucket, "out/clip.pcm.provenance.json") == 1


def test_a_killed_workers_job_restarts_elsewhere_and_commits_once(stack: LocalStack, s3, bucket: str,
                                                                  tmp_path: Path, slow_sts: str) -> None:
    manifest = _one_job(s3, tmp_path, bucket)
    with lane(stack, STS_API_BASE_URL=slow_sts, **FAST_REDELIVERY) as test_lane:
        doomed = test_lane.start_worker(concurrency=1)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "kill-run")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        _wait_until(lambda: _stats(slow_sts)["in_flight"] == 1, 60, "the first request to be in flight")
        doomed.kill()
        killed_at = time.monotonic()
        test_lane.start_worker(concurrency=1)
        restarted_at = _wait_until(lambda: _stats(slow_sts)["requests_total"] >= 2, 90, "the job to restart")
        _wait_until(lambda: _versions(s3, bucket, "out/clip.pcm.provenance.json") == 1, 90, "the commit")
    assert restarted_at - killed_at < 90
    assert _versions(s3, bucket, "out/clip.pcm") == 1
    assert _versions(s3, bucket, "out/clip.pcm.provenance.json") == 1
    record = json.loads(s3.get_object(Bucket=bucket, Key="out/clip.pcm.provenance.json")["Body"].read())
    assert record["worker"]["unclean_deliveries_before"] == 1
    assert [a["outcome"] for a in record["attempts"]] == ["ok"]
