"""At-least-once delivery with fast recovery: the visibility heartbeat (workers/heartbeat.py) on real Celery + Redis.

- a job that runs three times longer than the visibility timeout is started exactly once;
- a worker SIGKILLed mid-stream loses nothing: its job restarts on another worker within 90 s and leaves exactly one
  output and one provenance record (counted as object versions on a versioned bucket).

Both run with each worker pool (``POOLS``): a threads worker's jobs are threads of the process that beats.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pipeline.local.services import LocalStack
from tests.support import (
    FAST_REDELIVERY,
    POOL_BANNERS,
    POOLS,
    VOICES,
    lane,
    object_versions,
    sts_stats,
    wait_until,
    write_input,
    write_jsonl,
)


def _one_job(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    source = write_input(tmp / "in.wav", 2.0)
    s3.upload_file(str(source), bucket, "in/clip.wav")
    line = {"input": f"s3://{bucket}/in/clip.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
            "output": f"s3://{bucket}/out/clip.pcm"}
    return write_jsonl(tmp / "one.jsonl", [line])


@pytest.fixture
def slow_sts(stack: LocalStack, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private offline server whose every answer takes at least 24 s (three visibility timeouts)."""
    with LocalStack(workdir=tmp_path / "slow") as own:
        own.start_sts("--latency-fixed", "24")
        yield own.sts_url


@pytest.mark.parametrize("pool", POOLS)
def test_a_job_longer_than_the_visibility_timeout_runs_once(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                            slow_sts: str, pool: str) -> None:
    manifest = _one_job(s3, tmp_path, bucket)
    with lane(stack, pool, STS_API_BASE_URL=slow_sts, **FAST_REDELIVERY) as test_lane:
        test_lane.start_worker(concurrency=2)
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "120")
        assert result.returncode == 0, result.stderr[-2000:]
        log = test_lane.workers[0].log_path.read_text()
    assert sts_stats(slow_sts)["requests_total"] == 1
    assert len(re.findall(r"Task sts\.convert\[[^\]]+\] received", log)) == 1
    assert POOL_BANNERS[pool] in log
    assert object_versions(s3, bucket, "out/clip.pcm") == 1
    assert object_versions(s3, bucket, "out/clip.pcm.provenance.json") == 1


@pytest.mark.parametrize("pool", POOLS)
def test_a_killed_workers_job_restarts_elsewhere_and_commits_once(stack: LocalStack, s3, bucket: str,
                                                                  tmp_path: Path, slow_sts: str, pool: str) -> None:
    manifest = _one_job(s3, tmp_path, bucket)
    with lane(stack, pool, STS_API_BASE_URL=slow_sts, **FAST_REDELIVERY) as test_lane:
        doomed = test_lane.start_worker(concurrency=1)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", f"kill-run-{pool}")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: sts_stats(slow_sts)["in_flight"] == 1, 60, "the first request to be in flight")
        doomed.kill()
        killed_at = time.monotonic()
        test_lane.start_worker(concurrency=1)
        restarted_at = wait_until(lambda: sts_stats(slow_sts)["requests_total"] >= 2, 90, "the job to restart")
        wait_until(lambda: object_versions(s3, bucket, "out/clip.pcm.provenance.json") == 1, 90, "the commit")
    assert restarted_at - killed_at < 90
    assert object_versions(s3, bucket, "out/clip.pcm") == 1
    assert object_versions(s3, bucket, "out/clip.pcm.provenance.json") == 1
    record = json.loads(s3.get_object(Bucket=bucket, Key="out/clip.pcm.provenance.json")["Body"].read())
    assert record["worker"]["unclean_deliveries_before"] == 1
    assert [a["outcome"] for a in record["attempts"]] == ["ok"]
