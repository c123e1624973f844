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

import redis

from pipeline.local.services import LocalStack
from tests.support import (
    FAST_REDELIVERY,
    VOICES,
    lane,
    object_versions,
    queued,
    sts_stats,
    wait_until,
    write_input,
    write_jsonl,
)


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
            wait_until(lambda: sts_stats(own.sts_url)["in_flight"] == 1, 60, "the request to be in flight")
            own.service("redis").stop()
            # the answer arrives and is committed while Redis is still away
            wait_until(lambda: object_versions(s3, bucket, "out/clip.pcm.provenance.json") == 1, 90, "the commit")
            own.start_redis(port=own.redis_port)
            time.sleep(3)  # a redelivery, were there one, would show up as a second request
            stats = sts_stats(own.sts_url)
    assert stats["requests_total"] == 1 and stats["successes"] == 1
    assert object_versions(s3, bucket, "out/clip.pcm") == 1
    assert object_versions(s3, bucket, "out/clip.pcm.provenance.json") == 1


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
                    wait_until(lambda: queued(client, test_lane.queue) == 1, 60, "the job to be queued")
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
