"""Graceful drain with real processes: SIGTERM to a worker with requests in flight loses nothing and pays nothing
twice.

The worker runs as Kubernetes runs it (``REMAP_SIGTERM=SIGQUIT``: SIGTERM is Celery's cold shutdown, whose soft phase
``STS_SOFT_SHUTDOWN_TIMEOUT_S`` outlasts a request). A private offline server answers every request after 6 s.
SIGTERM arrives while three requests are in flight: they end, their jobs upload and commit; what the worker had not
finished goes back to the queue and a second worker finishes it. Every job ends ``succeeded`` once (one version of
each output and of each provenance record on a versioned bucket) and the server counts exactly one successful request
per job. It runs with each worker pool: with ``--pool threads`` the three jobs are threads of the signalled process.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local.services import LocalStack
from tests.support import (
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

JOBS = 5
IN_FLIGHT = 3


@pytest.fixture
def slow_sts(tmp_path: Path) -> Iterator[str]:
    with LocalStack(workdir=tmp_path / "slow") as own:
        own.start_sts("--latency-fixed", "6")
        yield own.sts_url


def _manifest(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    lines = []
    for i in range(JOBS):
        source = write_input(tmp / f"in{i}.wav", 2.0, seed=i)
        s3.upload_file(str(source), bucket, f"in/clip{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/clip{i}.wav", "voice_id": VOICES[i % len(VOICES)],
                      "output_format": "pcm_16000", "output": f"s3://{bucket}/out/clip{i}.pcm"})
    return write_jsonl(tmp / "drain.jsonl", lines)


def _committed(s3, bucket: str) -> int:  # type: ignore[no-untyped-def]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    return sum(1 for item in listed if item["Key"].endswith(".provenance.json"))


@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_with_three_requests_in_flight_loses_nothing_and_pays_nothing_twice(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str, pool: str) -> None:
    manifest = _manifest(s3, tmp_path, bucket)
    heartbeat = tmp_path / "heartbeat"
    with lane(stack, pool, STS_API_BASE_URL=slow_sts, STS_MAX_CONCURRENT_REQUESTS="3", REMAP_SIGTERM="SIGQUIT",
              STS_SOFT_SHUTDOWN_TIMEOUT_S="20", STS_HEARTBEAT_INTERVAL_S="2") as test_lane:
        draining = test_lane.start_worker(concurrency=IN_FLIGHT, STS_HEARTBEAT_FILE=str(heartbeat))
        submitted = test_lane.cli("submit", str(manifest), "--run-id", f"drain-run-{pool}")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: sts_stats(slow_sts)["in_flight"] == IN_FLIGHT, 90, "three requests in flight")
        draining.kill(signal.SIGTERM)
        time.sleep(12)  # well into the soft shutdown, whose sleep stops Celery's own timers
        assert draining.alive() and time.time() - heartbeat.stat().st_mtime < 5  # the keep-alive still beats
        wait_until(lambda: not draining.alive(), 60, "the worker to drain and exit")
        assert sts_stats(slow_sts)["successes"] == IN_FLIGHT  # the requests in flight ended, none was cut
        assert _committed(s3, bucket) == IN_FLIGHT  # ... and their jobs were uploaded and committed
        test_lane.start_worker(concurrency=2)
        wait_until(lambda: _committed(s3, bucket) == JOBS, 120, "the rest of the run")
        status = test_lane.cli("status", f"drain-run-{pool}")
        log = draining.log_path.read_text()
    stats = sts_stats(slow_sts)
    assert stats["successes"] == JOBS and stats["requests_total"] == JOBS, stats
    for i in range(JOBS):
        assert object_versions(s3, bucket, f"out/clip{i}.pcm") == 1
        assert object_versions(s3, bucket, f"out/clip{i}.pcm.provenance.json") == 1
        record = json.loads(s3.get_object(Bucket=bucket, Key=f"out/clip{i}.pcm.provenance.json")["Body"].read())
        assert [a["outcome"] for a in record["attempts"]] == ["ok"]
    assert "succeeded" in status.stdout, status.stdout + status.stderr
    assert "Soft Shutdown" in log, log[-3000:]
    assert POOL_BANNERS[pool] in log


def test_a_draining_long_job_starts_no_new_segment_and_resumes_elsewhere(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str) -> None:
    """Without the drain flag the job would start its next segments during the soft shutdown and the cancel at its
    end would cut one: a request paid for and made again. With it the job hands itself back after its first segment
    (checkpointed), and the second worker converts only the rest: the server counts one request per segment."""
    source = write_input(tmp_path / "long.wav", 40.0, seed=7)
    s3.upload_file(str(source), bucket, "in/long.wav")
    manifest = write_jsonl(tmp_path / "long.jsonl", [{
        "input": f"s3://{bucket}/in/long.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
        "output": f"s3://{bucket}/out/long.pcm", "max_segment_seconds": 10}])
    with lane(stack, STS_API_BASE_URL=slow_sts, REMAP_SIGTERM="SIGQUIT", STS_SOFT_SHUTDOWN_TIMEOUT_S="20",
              STS_SEGMENT_WORKERS="1") as test_lane:
        draining = test_lane.start_worker(concurrency=1)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "drain-long")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: sts_stats(slow_sts)["in_flight"] == 1, 90, "the first segment's request")
        draining.kill(signal.SIGTERM)
        wait_until(lambda: not draining.alive(), 60, "the worker to drain and exit")
        assert sts_stats(slow_sts)["requests_total"] == sts_stats(slow_sts)["successes"] == 1
        test_lane.start_worker(concurrency=1)
        wait_until(lambda: _committed(s3, bucket) == 1, 150, "the long job to finish elsewhere")
    record = json.loads(s3.get_object(Bucket=bucket, Key="out/long.pcm.provenance.json")["Body"].read())
    segments = record["segments"]
    assert len(segments) >= 3
    assert [s["source"] for s in segments].count("checkpoint") == 1
    stats = sts_stats(slow_sts)
    assert stats["requests_total"] == stats["successes"] == len(segments), stats
    assert object_versions(s3, bucket, "out/long.pcm") == 1
