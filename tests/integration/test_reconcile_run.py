"""A real run of 3 shards with every kind of trouble, Redis flushed mid-run; the answer comes from S3 alone.

Shard A has two lines the API rejects (400 audio_too_long: longer than the server's input limit), a missing input and
a corrupt input; shard B is plain; shard C runs while the server answers 500 to everything, beyond the attempt limit.
Redis is flushed while A and B are under way, so some of their jobs never run. ``reconcile`` must count each shard
exactly as S3 holds it; after the user fixes the two bad inputs, ``retry`` completes everything retryable, and a second
``reconcile`` leaves only the rejections. The HTML page renders in Chromium with the JSON's numbers.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.local.services import LocalStack
from tests.integration.test_report_html import CHROMIUM, Figures, png_size_and_colours, resolve
from tests.support import VOICES, lane, write_input, write_jsonl

SHARD_SIZE = 8


@pytest.fixture(scope="module")
def sts(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with LocalStack(workdir=tmp_path_factory.mktemp("reconcile-sts")) as own:
        own.start_sts("--max-input-seconds", "4", "--latency-fixed", "1.0")
        yield own.sts_url


def _faults(url: str, **rates: float) -> None:
    httpx.put(f"{url}/_admin/faults", json=rates, timeout=5).raise_for_status()


def _shard(s3, bucket: str, tmp: Path, name: str, special: dict[int, str]) -> Path:  # type: ignore[no-untyped-def]
    lines = []
    for n in range(SHARD_SIZE):
        kind = special.get(n, "good")
        key = f"in/{name}-{n}.wav"
        if kind == "long":
            s3.upload_file(str(write_input(tmp / f"{name}-{n}.wav", 6.0, seed=n)), bucket, key)
        elif kind == "corrupt":
            s3.put_object(Bucket=bucket, Key=key, Body=b"RIFF\x00\x00\x00\x00WAVEfmt garbage, not audio" * 20)
        elif kind != "missing":
            s3.upload_file(str(write_input(tmp / f"{name}-{n}.wav", 1.5, seed=n)), bucket, key)
        lines.append({"input": f"s3://{bucket}/{key}", "voice_id": VOICES[n % 4], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/{name}/{n}.pcm"})
    return write_jsonl(tmp / f"{name}.jsonl", lines)


def _truth(s3, bucket: str, name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """What S3 holds for a shard, counted by listing (independently of the reconciler)."""
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"out/{name}/").get("Contents", [])}
    states = {"succeeded": 0, "failed": 0, "rejected": 0, "missing": 0}
    for n in range(SHARD_SIZE):
        base = f"out/{name}/{n}.pcm"
        if f"{base}.provenance.json" in keys:
            states["succeeded"] += 1
        elif f"{base}.failure.json" in keys:
            record = json.loads(s3.get_object(Bucket=bucket, Key=f"{base}.failure.json")["Body"].read())
            states[record["status"]] += 1
        else:
            states["missing"] += 1
    return states


def _wait_quiet(url: str, s3, bucket: str, quiet_s: float = 6.0, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Until the server has had nothing in flight and S3 has not changed for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        snapshot = (httpx.get(f"{url}/_admin/stats", timeout=5).json()["requests_total"],
                    s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount"))
        busy = httpx.get(f"{url}/_admin/stats", timeout=5).json()["in_flight"]
        if snapshot != last or busy:
            last, since = snapshot, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError("the run never went quiet")


def test_reconcile_from_s3_alone_then_retry_leaves_only_the_rejections(stack: LocalStack, s3, bucket: str,
                                                                       tmp_path: Path, sts: str) -> None:
    shard_a = _shard(s3, bucket, tmp_path, "a", {1: "long", 4: "long", 2: "missing", 6: "corrupt"})
    shard_b = _shard(s3, bucket, tmp_path, "b", {})
    shard_c = _shard(s3, bucket, tmp_path, "c", {})
    env = {"STS_API_BASE_URL": sts, "STS_MAX_ATTEMPTS": "2", "STS_BACKOFF_BASE_S": "0.1", "STS_BACKOFF_MAX_S": "0.5",
           "STS_RUNS_URI": f"s3://{bucket}/runs"}
    broker = redis.Redis.from_url(stack.redis_url)
    with lane(stack, **env) as test_lane:
        test_lane.start_worker(concurrency=1)
        _faults(sts, rate_500=1.0)
        failing = test_lane.cli("submit", str(shard_c), "--wait", "--timeout", "90")
        assert failing.returncode == 1, failing.stderr[-2000:]
        _faults(sts, rate_500=0.0)
        submitted = test_lane.cli("submit", str(shard_a), str(shard_b), "--run-id", "nightly")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        deadline = time.monotonic() + 60
        while s3.list_objects_v2(Bucket=bucket, Prefix="out/b/").get("KeyCount", 0) < 2:
            assert time.monotonic() < deadline, "shard b never started"
            time.sleep(0.3)
        broker.flushdb()
        _wait_quiet(sts, s3, bucket)

        report = test_lane.cli("reconcile", str(shard_a), str(shard_b), str(shard_c), "--json",
                               STS_BROKER_URL="redis://127.0.0.1:1/0")
        assert report.returncode == 1, report.stderr[-2000:]
        data = json.loads(report.stdout)
        shards = {s["name"]: s for s in data["shards"]}
        for name in ("a", "b", "c"):
            truth = _truth(s3, bucket, name)
            got = shards[f"{name}.jsonl"]
            assert {k: got[k] for k in truth} == truth, (name, got, truth)
        assert shards["c.jsonl"]["failed"] == SHARD_SIZE
        assert shards["a.jsonl"]["rejected"] == 2
        reasons = {group["reason"]: group["count"] for group in data["failures"]}
        assert reasons["http_500"] == SHARD_SIZE
        assert reasons["missing_input"] == 1
        assert sum(reasons.values()) == data["totals"]["failed"]
        assert data["totals"]["missing"] > 0, "the flush should have lost some queued jobs"
        [rejection] = data["rejected"]  # both too-long lines, under the service's own message
        assert rejection["count"] == 2 and "the limit is" in rejection["message"]

        s3.upload_file(str(write_input(tmp_path / "fixed-2.wav", 1.5)), bucket, "in/a-2.wav")
        s3.upload_file(str(write_input(tmp_path / "fixed-6.wav", 1.5)), bucket, "in/a-6.wav")
        retried = test_lane.cli("retry", str(shard_a), str(shard_b), str(shard_c), "--wait", "--timeout", "150")
        assert retried.returncode == 0, retried.stderr[-2000:]

        page = tmp_path / "report.html"
        final = test_lane.cli("reconcile", str(shard_a), str(shard_b), str(shard_c), "--json", "--html", str(page))
    assert final.returncode == 1
    data = json.loads(final.stdout)
    assert data["totals"]["succeeded"] == 3 * SHARD_SIZE - 2
    assert data["totals"]["rejected"] == 2
    assert data["totals"]["failed"] == data["totals"]["missing"] == data["totals"]["orphan"] == 0

    figures = Figures()
    figures.feed(page.read_text())
    assert {"totals.succeeded", "totals.rejected", "shards.0.succeeded"} <= set(figures.found)
    for key, text in figures.found.items():
        assert float(text.replace(",", "")) == resolve(data, key), key
    shot = tmp_path / "report.png"
    subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", page.as_uri()], capture_output=True, timeout=90, check=True)
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == (1280, 2000) and colours > 100
