"""Spend control on real services: a budget defers what it cannot pay for, retry finishes it, the cap is learned.
Both hold with each worker pool (``POOLS``): a threads worker's jobs share one process's limiter and budget clients
(the cap test runs one worker of each pool side by side)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.local.services import LocalStack
from pipeline.run.budget import Budget
from tests.support import POOLS, VOICES, lane, write_input, write_jsonl

SECONDS = 3.0
CREDITS_PER_SECOND = 10.0  # the offline server's bill and the workers' estimate agree: 30 credits a job


@pytest.fixture(scope="module")
def billing_sts(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with LocalStack(workdir=tmp_path_factory.mktemp("billing")) as own:
        own.start_sts("--credits-per-second", str(CREDITS_PER_SECOND), "--max-concurrent", "3",
                      "--latency-fixed", "0.5")
        yield own.sts_url


def _manifest(s3, bucket: str, tmp: Path, count: int, name: str) -> Path:  # type: ignore[no-untyped-def]
    lines = []
    for n in range(count):
        source = write_input(tmp / f"{name}-{n}.wav", SECONDS, seed=n)
        s3.upload_file(str(source), bucket, f"in/{name}-{n}.wav")
        lines.append({"input": f"s3://{bucket}/in/{name}-{n}.wav", "voice_id": VOICES[n % 4],
                      "output_format": "pcm_16000", "output": f"s3://{bucket}/out/{name}-{n}.pcm"})
    return write_jsonl(tmp / f"{name}.jsonl", lines)


@pytest.mark.parametrize("pool", POOLS)
def test_a_budget_defers_the_rest_and_retry_with_a_new_budget_finishes(stack: LocalStack, s3, bucket: str,
                                                                       tmp_path: Path, billing_sts: str,
                                                                       pool: str) -> None:
    manifest = _manifest(s3, bucket, tmp_path, 10, "budget")
    env = {"STS_API_BASE_URL": billing_sts, "STS_CREDITS_PER_SECOND": str(CREDITS_PER_SECOND),
           "STS_RUNS_URI": f"s3://{bucket}/runs"}
    run_id = f"budget-{pool}"
    with lane(stack, pool, **env) as test_lane:
        test_lane.start_worker(concurrency=2)
        first = test_lane.cli("submit", str(manifest), "--run-id", run_id, "--budget", "150", "--wait",
                              "--timeout", "120")
        assert first.returncode == 1, first.stderr[-2000:]
        spent = Budget(redis.Redis.from_url(stack.redis_url), run_id).spent()
        in_flight_allowance = 2 * SECONDS * CREDITS_PER_SECOND
        assert spent <= 150 + in_flight_allowance
        deferred = []
        for n in range(10):
            listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"out/budget-{n}.pcm.failure.json")
            if listing.get("KeyCount"):
                record = json.loads(s3.get_object(Bucket=bucket, Key=f"out/budget-{n}.pcm.failure.json")["Body"].read())
                deferred.append(record["status"])
        assert deferred and set(deferred) == {"deferred"}
        assert 10 - len(deferred) >= 4
        retried = test_lane.cli("retry", "--run", run_id, "--budget", "1000", "--wait", "--timeout", "120")
        assert retried.returncode == 0, retried.stderr[-2000:]
        report = test_lane.cli("reconcile", "--run", run_id, "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    totals = json.loads(report.stdout)["totals"]
    assert totals["succeeded"] == 10
    provenance_credits = 0.0
    for n in range(10):
        record = json.loads(s3.get_object(Bucket=bucket, Key=f"out/budget-{n}.pcm.provenance.json")["Body"].read())
        provenance_credits += record["cost"]["credits"]
        assert s3.list_objects_v2(Bucket=bucket, Prefix=f"out/budget-{n}.pcm.failure").get("KeyCount") == 0
    assert provenance_credits == pytest.approx(10 * SECONDS * CREDITS_PER_SECOND, abs=1)


def test_the_cap_is_learned_from_the_service_headers(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                     billing_sts: str) -> None:
    """One worker of each pool, four jobs at once each, share the one cap the service reports."""
    httpx.post(f"{billing_sts}/_admin/reset", timeout=5)
    manifest = _manifest(s3, bucket, tmp_path, 12, "cap")
    with lane(stack, STS_API_BASE_URL=billing_sts) as test_lane:
        for pool in POOLS:
            test_lane.pool = pool
            test_lane.start_worker(concurrency=4)
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "150")
        logs = "".join(w.log_path.read_text() for w in test_lane.workers)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = httpx.get(f"{billing_sts}/_admin/stats", timeout=5).json()
    assert stats["max_in_flight"] <= 3
    assert stats["requests_by_status"].get("429", 0) == 0
    assert stats["successes"] == 12
    assert "the service reports a cap of 3 concurrent requests" in logs
