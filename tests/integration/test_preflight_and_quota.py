"""The account is asked before anything is spent, and a quota spent mid-run defers the rest instead of failing it.

Against the offline server imitating a Starter account (tier-gated formats refused, 2,500 credits a period).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.local.services import LocalStack
from tests.support import VOICES, lane, queued, sts_stats, write_input, write_jsonl

KEY = "preflight-key"
IN, OUT = "preflight-in", "preflight-out"


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Redis, S3 and an offline server of its own, on the Starter tier with 2,500 credits."""
    with LocalStack(workdir=tmp_path_factory.mktemp("starter")) as own:
        own.start_redis()
        own.start_s3()
        own.start_sts("--api-key", KEY, "--tier", "starter", "--credits-limit", "2500")
        yield own


def _manifest(tmp: Path, s3: Any, lines: list[dict[str, Any]]) -> Path:
    return write_jsonl(tmp / "night.jsonl", lines)


def _upload(s3: Any, tmp: Path, name: str, seconds: float, seed: int) -> str:
    path = write_input(tmp / name, seconds, seed=seed)
    s3.put_object(Bucket=IN, Key=name, Body=path.read_bytes())
    return f"s3://{IN}/{name}"


def _s3(stack: LocalStack) -> Any:
    import boto3

    from pipeline.local.services import LOCAL_AWS_ENV

    client = boto3.client("s3", endpoint_url=stack.s3_url, region_name="us-east-1",
                          aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    for bucket in (IN, OUT):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    return client


def _speech_requests(url: str) -> int:
    stats = sts_stats(url)
    return int(stats["requests_total"])


def test_the_preflight_names_every_line_the_account_refuses_and_spends_nothing(starter: LocalStack,
                                                                              tmp_path: Path) -> None:
    s3 = _s3(starter)
    good = [_upload(s3, tmp_path, f"long-{n}.wav", 60.0, n) for n in range(3)]  # 3 min: ~3,000 credits > 2,500
    lines = [
        {"input": good[0], "voice_id": VOICES[0], "output": f"s3://{OUT}/a/0.mp3"},
        {"input": good[1], "voice_id": "NoSuchVoice000000000", "output": f"s3://{OUT}/a/1.mp3"},
        {"input": good[1], "voice_id": VOICES[1], "model_id": "eleven_multilingual_v2", "output": f"s3://{OUT}/a/2.mp3"},
        {"input": good[2], "voice_id": VOICES[2], "output_format": "pcm_44100", "output": f"s3://{OUT}/a/3.pcm"},
        {"input": good[2], "voice_id": VOICES[3], "output": f"s3://{OUT}/a/4.mp3"},
        {"input": good[0], "voice_id": VOICES[1], "output": f"s3://{OUT}/a/5.mp3"},
    ]
    manifest = _manifest(tmp_path, s3, lines)
    httpx.post(f"{starter.sts_url}/_admin/reset", timeout=5)
    with lane(starter, STS_API_KEY=KEY) as test_lane:
        validated = test_lane.cli("validate", "--remote", str(manifest))
        planned = test_lane.cli("plan", str(manifest), "--json")
        submitted = test_lane.cli("submit", str(manifest))
        with redis.Redis.from_url(starter.redis_url) as client:
            waiting = queued(client, test_lane.queue)
    assert validated.stdout, validated.stderr[-3000:]
    for output in (validated.stdout, planned.stderr, submitted.stderr):
        assert f"{manifest}:2: voice_id:" in output and "NoSuchVoice000000000" in output
        assert f"{manifest}:3: model_id:" in output and "cannot do voice conversion" in output
        assert f"{manifest}:4: output_format:" in output and "pro plan" in output
        assert "2500 left" in output or "2,500" in output
    assert validated.returncode == 1 and planned.returncode == 1 and submitted.returncode == 1
    assert f"{manifest}:1:" not in validated.stdout and f"{manifest}:5:" not in validated.stdout
    assert json.loads(planned.stdout)["preflight"]["credits_left"] == 2500
    assert "nothing was enqueued" in submitted.stderr and waiting == 0
    assert _speech_requests(starter.sts_url) == 0  # the account endpoints only: no speech-to-speech request


def test_a_quota_spent_mid_run_defers_the_rest_and_retry_finishes_it(starter: LocalStack, tmp_path: Path) -> None:
    s3 = _s3(starter)
    clip = _upload(s3, tmp_path, "clip-20s.wav", 20.0, 7)  # 20 s: 333 credits each, so 7 fit in 2,500
    lines = [{"input": clip, "voice_id": VOICES[n % 4], "seed": n, "output": f"s3://{OUT}/quota/{n}.mp3"}
             for n in range(12)]
    manifest = _manifest(tmp_path, s3, lines)
    httpx.put(f"{starter.sts_url}/_admin/account", json={"credits_limit": 2500, "credits_used": 0}, timeout=5)
    httpx.post(f"{starter.sts_url}/_admin/reset", timeout=5)
    with lane(starter, STS_API_KEY=KEY, STS_MAX_CONCURRENT_REQUESTS="2") as test_lane:
        test_lane.start_worker(concurrency=2)
        first = test_lane.cli("submit", str(manifest), "--allow-partial", "--wait", "--timeout", "200",
                              timeout_s=260)
        run_id = first.stdout.strip().splitlines()[-1]
        runs = ("--runs-uri", f"s3://{OUT}/sts-runs")
        report = json.loads(test_lane.cli("reconcile", "--run", run_id, *runs, "--json").stdout)
        counts = report["totals"]
        succeeded = counts["succeeded"]
        assert counts["failed"] == 0 and counts["rejected"] == 0
        assert succeeded + counts["deferred"] == 12 and 1 <= succeeded < 12
        assert {g["reason"] for g in report["deferred"]} <= {"quota_exceeded", "budget"}
        httpx.put(f"{starter.sts_url}/_admin/account", json={"credits_limit": 10_000}, timeout=5)
        again = test_lane.cli("retry", "--run", run_id, *runs, "--wait", "--timeout", "200", timeout_s=260)
        assert again.returncode == 0, again.stderr[-2000:]
        final = json.loads(test_lane.cli("reconcile", "--run", run_id, *runs, "--json").stdout)
    assert final["totals"]["succeeded"] == 12
    assert sts_stats(starter.sts_url)["successes"] == 12  # every job paid once
