"""Redis goes away and comes back empty while a run goes on (what ``make chaos`` found, kept as tests).

- a job whose request is streaming when Redis stops is not cancelled: it keeps the audio it paid for although the
  limiter and the budget cannot record the response, and commits once (one output version, one request);
- ``submit --wait`` rides out the outage, then says in one line that the run's live state is gone.

Each test has its own redis-server (stopping the shared one would disturb other tests); S3 is the shared moto server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from pipeline.embedded import LocalStack
from tests.support import VOICES, lane, write_input, write_jsonl

FAST_REDELIVERY = {"STS_VISIBILITY_TIMEOUT_S": "8", "STS_HEARTBEAT_INTERVAL_S": "2", "STS_RESTORE_INTERVAL_S": "1",
                   "STS_LEASE_S": "6"}


def _stats(url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{url}/_admin/stats", timeout=5).json()


def _wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _versions(s3, bucket: str, key: str) -> int:  # type: ignore[no-untyped-def]
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == key)


def _one_job(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.upload_file(str(write_input(tmp / "in.wav", 2.0)), bucket, "in/clip.wav")
    line = {"input": f"s3://{bucket}/in/clip.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
            "output": f"s3://{bucket}/out/clip.pcm"}
    return write_jsonl(tmp / "one.jsonl", [line])


def test_a_job_streaming_when_redis_goes_away_keeps_its_audio_and_commits_once(
        stack: LocalStack, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = _one_job(s3, tmp_path, bucket)
    with LocalStack(workdir=tmp_path / "own") as own:
        own.start_redis()
        own.start_sts("--latency-fixed", "4")
        overrides = {"STS_BROKER_URL": own.redis_url, "STS_API_BASE_URL": own.sts_url, **FAST_REDELIVERY}
        with lane(stack, **overrides) as test_lane:
            test_lane.start_worker(concurrency=1)
            assert test_lane.cli("submit", str(manifest)).returncode == 0
            _wait_until(lambda: _stats(own.sts_url)["in_flight"] == 1, 60, "the request to be in flight")
            own.service("redis").stop()
            # the answer arrives and is committed while Redis is still away
            _wait_until(lambda: _versions(s3, bucket, "out/clip.pcm.provenance.json") == 1, 90, "the commit")
            own.start_redis(port=own.redis_port)
            time.sleep(3)  # a redelivery, were there one, would show up as a second request
            stats = _stats(own.sts_url)
    assert stats["requests_total"] == 1 and stats["successes"] == 1
    assert _versions(s3, bucket, "out/clip.pcm") == 1
    assert _versions(s3, bucket, "out/clip.pcm.provenance.json") == 1


def test_submit_wait_says_in_one_line_that_the_run_state_is_gone(
        stack: LocalStack, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = _one_job(s3, tmp_path, bucket)
    with LocalStack(workdir=tmp_path / "own") as own:
        own.start_redis()
        with lane(stack, STS_BROKER_URL=own.redis_url) as test_lane:  # no worker: the job stays queued
            waiting = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "submit", str(manifest), "--wait",
                                        "--timeout", "120"], env=test_lane.env(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            try:
                with redis.Redis.from_url(own.redis_url) as client:
                    _wait_until(lambda: client.llen(test_lane.queue) == 1, 60, "the job to be queued")
                own.service("redis").stop()
                time.sleep(2)
                own.start_redis(port=own.redis_port)
                _, stderr = waiting.communicate(timeout=60)
            finally:
                if waiting.poll() is None:
                    waiting.kill()
    assert waiting.returncode != 0
    assert "live state is gone from Redis" in stderr
    assert "Traceback" not in stderr
