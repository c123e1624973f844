"""Retries, one shared cap across worker processes, and rejections, against an offline server that misbehaves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from pipeline.local.services import LocalStack
from tests.support import VOICES, lane, write_input, write_jsonl

CAP = 3
RETRY_FAST = {"STS_BACKOFF_BASE_S": "0.2", "STS_BACKOFF_MAX_S": "2", "STS_MAX_ATTEMPTS": "12",
              "STS_COOLDOWN_DEFAULT_S": "0.5", "STS_SLOT_WAIT_S": "60"}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An offline server with a cap of 3 and 30% injected faults: 429 busy, 500, 503 and cut streams."""
    with LocalStack(workdir=tmp_path_factory.mktemp("faulty")) as own:
        own.start_sts("--max-concurrent", str(CAP), "--rate-429", "0.08", "--rate-500", "0.08", "--rate-503", "0.06",
                      "--rate-cut", "0.10", "--latency-fixed", "0.3", "--retry-after", "1", "--fault-seed", "7",
                      "--max-input-seconds", "4")
        yield own.sts_url


def _upload_inputs(s3, bucket: str, tmp: Path, count: int, seconds: float = 1.0) -> list[str]:  # type: ignore[no-untyped-def]
    uris = []
    for n in range(count):
        path = write_input(tmp / f"in-{n}.wav", seconds, seed=n)
        s3.upload_file(str(path), bucket, f"in/{n}.wav")
        uris.append(f"s3://{bucket}/in/{n}.wav")
    return uris


def test_a_hundred_jobs_through_faults_all_succeed_under_one_cap(stack: LocalStack, s3, bucket: str,
                                                                 tmp_path: Path, faulty: str) -> None:
    httpx.post(f"{faulty}/_admin/reset", timeout=5)
    inputs = _upload_inputs(s3, bucket, tmp_path, 100)
    lines = [{"input": uri, "voice_id": VOICES[n % 4], "output_format": "pcm_16000", "seed": n,
              "output": f"s3://{bucket}/out/{n}.pcm"} for n, uri in enumerate(inputs)]
    manifest = write_jsonl(tmp_path / "hundred.jsonl", lines)
    with lane(stack, STS_API_BASE_URL=faulty, STS_MAX_CONCURRENT_REQUESTS=str(CAP), **RETRY_FAST) as test_lane:
        test_lane.start_worker(concurrency=3)
        test_lane.start_worker(concurrency=3)
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "280", timeout_s=320)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = httpx.get(f"{faulty}/_admin/stats", timeout=5).json()
    assert stats["max_in_flight"] <= CAP
    assert stats["successes"] >= 100
    faults = sum(stats["faults_injected"].values())
    assert faults >= 15, stats
    retried = 0
    for n in range(100):
        record = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{n}.pcm.provenance.json")["Body"].read())
        attempts = record["attempts"]
        assert attempts[-1]["outcome"] == "ok" and attempts[-1]["status"] == 200
        assert all(a["outcome"] != "ok" for a in attempts[:-1])
        assert all(a["started_at"] and "wait_before_s" in a for a in attempts)
        retried += len(attempts) > 1
    assert retried >= 10


def test_a_rejection_is_tried_once_and_recorded_as_rejected(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                      faulty: str) -> None:
    long_input = write_input(tmp_path / "long.wav", 6.0)
    s3.upload_file(str(long_input), bucket, "in/long.wav")
    line = {"input": f"s3://{bucket}/in/long.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
            "output": f"s3://{bucket}/out/long.pcm"}
    manifest = write_jsonl(tmp_path / "reject.jsonl", [line])
    httpx.put(f"{faulty}/_admin/faults", json={"rate_429": 0, "rate_500": 0, "rate_503": 0, "rate_cut": 0},
              timeout=5)
    try:
        with lane(stack, STS_API_BASE_URL=faulty, **RETRY_FAST) as test_lane:
            test_lane.start_worker(concurrency=1)
            result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "60")
    finally:
        httpx.put(f"{faulty}/_admin/faults", json={"rate_429": 0.08, "rate_500": 0.08, "rate_503": 0.06,
                                                   "rate_cut": 0.10}, timeout=5)
    assert result.returncode == 1
    assert "rejected" in result.stderr
    record = json.loads(s3.get_object(Bucket=bucket, Key="out/long.pcm.failure.json")["Body"].read())
    assert record["status"] == "rejected"
    assert record["error"]["status"] == 400 and record["error"]["reason"] == "audio_too_long"
    assert record["error"]["detail"]["param"] == "audio"
    assert len(record["attempts"]) == 1
    assert s3.list_objects_v2(Bucket=bucket, Prefix="out/long.pcm.provenance").get("KeyCount") == 0
