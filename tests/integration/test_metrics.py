"""Metrics against real processes: a worker's /metrics moves with a run and ends equal to the provenance totals, and
the exporter's queue depth counts queued + reserved work while the worker holds a delivery.

A private offline server answers each request after 4 s, so there is a stable moment with one request in flight,
one message reserved by the worker (acks late: held until the job ends) and two waiting in the list.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pipeline.local.services import LocalStack, Service, free_port
from pipeline.ops.queue import PRIORITY_SEP, priority_lists
from tests.support import VOICES, Lane, lane, sts_stats, wait_until, write_input, write_jsonl

JOBS = 3


def scrape(port: int) -> dict[str, float]:
    """Every sample of a /metrics page, keyed ``name{label="value",...}`` (labels sorted)."""
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@pytest.fixture
def slow_sts(tmp_path: Path) -> Iterator[str]:
    with LocalStack(workdir=tmp_path / "slow") as own:
        own.start_sts("--latency-fixed", "4")
        yield own.sts_url


@pytest.fixture
def exporter(stack: LocalStack, tmp_path: Path) -> Iterator[tuple[Lane, int, str]]:
    """A lane, and ``sts-pipeline metrics`` for its queue and a second queue the test fills by hand."""
    prio_queue = f"prio-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with lane(stack) as test_lane:
        argv = [sys.executable, "-m", "pipeline.cli", "metrics", "--addr", "127.0.0.1", "--port", str(port),
                "--queue", test_lane.queue, "--queue", prio_queue]
        service = Service("exporter", argv, test_lane.env(), tmp_path / "exporter.log", port=port).start()
        try:
            yield test_lane, port, prio_queue
        finally:
            service.stop()


def _manifest(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    lines = []
    for i in range(JOBS):
        source = write_input(tmp / f"in{i}.wav", 2.0 + i, seed=i)
        s3.upload_file(str(source), bucket, f"in/clip{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/clip{i}.wav", "voice_id": VOICES[i % len(VOICES)],
                      "output_format": "pcm_16000", "output": f"s3://{bucket}/out/clip{i}.pcm"})
    return write_jsonl(tmp / "run.jsonl", lines)


def _held_by_hand(client: redis.Redis, queue: str) -> int:
    """queued + reserved, counted here without the exporter: every priority list, and unacked routed to the queue."""
    queued = sum(int(client.llen(name)) for name in priority_lists(queue))
    reserved = sum(1 for value in client.hvals("unacked") if json.loads(value)[2] == queue)
    return queued + reserved


def test_worker_metrics_equal_provenance_and_depth_counts_reserved_work(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str,
        exporter: tuple[Lane, int, str]) -> None:
    test_lane, exporter_port, prio_queue = exporter
    client = redis.Redis.from_url(stack.redis_url)
    metrics_port = free_port()
    test_lane.overrides["STS_API_BASE_URL"] = slow_sts
    test_lane.start_worker(concurrency=1, STS_METRICS_PORT=str(metrics_port))
    submitted = test_lane.cli("submit", str(_manifest(s3, tmp_path, bucket)), "--run-id", "metrics-run")
    assert submitted.returncode == 0, submitted.stderr[-2000:]

    wait_until(lambda: sts_stats(slow_sts)["in_flight"] == 1, 90, "the first request to be in flight")
    seen = scrape(exporter_port)
    by_hand = _held_by_hand(client, test_lane.queue)
    assert seen[f'sts_queue_depth{{queue="{test_lane.queue}"}}'] == by_hand == JOBS
    assert seen[f'sts_queue_reserved_messages{{queue="{test_lane.queue}"}}'] == 1  # the running job's delivery
    assert seen[f'sts_workers_alive{{queue="{test_lane.queue}"}}'] == 1
    assert seen["sts_limiter_in_flight"] == 1
    assert seen['sts_run_state{run_id="metrics-run",state="running"}'] == 1

    wait_until(lambda: total(scrape(metrics_port), "sts_api_requests_total") >= 1, 60, "the worker's counters")
    wait_until(lambda: total(scrape(metrics_port), "sts_jobs_finished_total") == JOBS, 120, "the run's end")
    worker = scrape(metrics_port)
    records = [json.loads(s3.get_object(Bucket=bucket, Key=f"out/clip{i}.pcm.provenance.json")["Body"].read())
               for i in range(JOBS)]
    assert total(worker, "sts_api_requests_total") == sum(r["cost"]["requests"] for r in records)
    credits = sum(r["cost"]["credits"] for r in records)
    assert credits > 0 and total(worker, "sts_credits_spent_total") == pytest.approx(credits)
    assert total(worker, "sts_audio_seconds_converted_total") == pytest.approx(
        sum(r["input"]["duration_s"] for r in records))
    assert worker['sts_jobs_finished_total{reason="ok",state="succeeded"}'] == JOBS
    assert worker["sts_queue_wait_seconds_count"] == JOBS
    assert worker['sts_job_duration_seconds_count{state="succeeded"}'] == JOBS
    assert test_lane.api_key not in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text

    client.rpush(prio_queue, "m0")
    client.rpush(prio_queue + PRIORITY_SEP + "3", "m3")
    client.rpush(prio_queue + PRIORITY_SEP + "9", "m9", "m9b")
    try:
        assert scrape(exporter_port)[f'sts_queue_messages{{queue="{prio_queue}"}}'] == 4
    finally:
        client.delete(*priority_lists(prio_queue))
