"""Run control with real processes: a cancelled run starts no request after the cancel, keeps what ran, and S3
alone (after a Redis flush too) tells its cancelled lines from missing ones.

A private offline server answers each request after 1.5 s; one worker converts two jobs at a time. Once 5 of 40 jobs
have committed, ``sts-pipeline cancel`` is given: the server's request count read right after it returns never grows
again, the jobs in flight then commit (``succeeded``), and every other job ends ``cancelled`` with a record; the
worker that ends the last job writes results.jsonl and errors.jsonl once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from pipeline.local.lane import Lane
from pipeline.local.services import LocalStack
from tests.support import VOICES, lane, queued, sts_stats, wait_until, write_input, write_jsonl

JOBS = 40


@pytest.fixture
def slow_sts(tmp_path: Path) -> Iterator[str]:
    with LocalStack(workdir=tmp_path / "slow") as own:
        own.start_sts("--latency-fixed", "1.5")
        yield own.sts_url


def _manifest(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    source = write_input(tmp / "in.wav", 1.0, seed=1)
    lines = []
    for i in range(JOBS):
        s3.upload_file(str(source), bucket, f"in/clip{i}.wav")
        lines.append({"id": f"clip-{i}", "input": f"s3://{bucket}/in/clip{i}.wav", "voice_id": VOICES[i % 4],
                      "output_format": "pcm_16000", "output": f"s3://{bucket}/out/clip{i}.pcm"})
    return write_jsonl(tmp / "cancel.jsonl", lines)


def _records(s3, bucket: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/")
            for item in page.get("Contents", [])]
    return Counter("provenance" if k.endswith(".provenance.json") else "failure" for k in keys
                   if k.endswith((".provenance.json", ".failure.json")))


def _exists(s3, bucket: str, key: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))


def _logs(test_lane: Lane) -> str:
    return "".join(w.log_path.read_text() for w in test_lane.workers)


def _check_result_files(s3, bucket: str, succeeded: int) -> None:  # type: ignore[no-untyped-def]
    """results.jsonl (written by the worker that ended the last job) has one line per manifest line, errors.jsonl
    exactly the non-successes."""
    def read(name: str) -> list[dict]:  # type: ignore[type-arg]
        body = s3.get_object(Bucket=bucket, Key=f"runs/cancel-run/{name}")["Body"].read().decode()
        return [json.loads(text) for text in body.splitlines()]

    results, errors = read("results.jsonl"), read("errors.jsonl")
    assert [r["line"] for r in results] == list(range(1, JOBS + 1))
    assert [r["id"] for r in results] == [f"clip-{i}" for i in range(JOBS)]
    assert Counter(r["state"] for r in results) == {"succeeded": succeeded, "cancelled": JOBS - succeeded}
    assert [e["line"] for e in errors] == [r["line"] for r in results if r["state"] != "succeeded"]
    assert {e["reason"] for e in errors} == {"cancelled"}
    assert all(r["request_ids"] and r["durations"]["input_s"] > 0 for r in results if r["state"] == "succeeded")


def _reconciled(test_lane, run_id: str, **env: str) -> dict:  # type: ignore[no-untyped-def]
    report = test_lane.cli("reconcile", "--run", run_id, "--json", **env)
    assert report.returncode == 1, report.stderr[-2000:]
    return dict(json.loads(report.stdout)["totals"])


def test_cancel_after_five_succeeded_starts_nothing_more_and_reconciles_without_missing(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str) -> None:
    manifest = _manifest(s3, tmp_path, bucket)
    with lane(stack, STS_API_BASE_URL=slow_sts, STS_MAX_CONCURRENT_REQUESTS="2",
              STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "cancel-run")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: _records(s3, bucket)["provenance"] >= 5, 120, "5 jobs to succeed")
        cancelled = test_lane.cli("cancel", "cancel-run", "--why", "wrong voice")
        at_cancel = sts_stats(slow_sts)
        assert cancelled.returncode == 0, cancelled.stderr[-2000:]
        wait_until(lambda: sum(_records(s3, bucket).values()) == JOBS, 120, "every job to end with a record")
        wait_until(lambda: sts_stats(slow_sts)["in_flight"] == 0, 30, "the requests in flight to end")
        wait_until(lambda: _exists(s3, bucket, "runs/cancel-run/results.jsonl"), 60, "the run's result files")
        # the finisher logs once its files are written: give its line a moment to reach the log after the upload
        wait_until(lambda: "run cancel-run finished: wrote" in _logs(test_lane), 10, "the finisher's log line")
        log = _logs(test_lane)
        status = test_lane.cli("status", "cancel-run")
        live = _reconciled(test_lane, "cancel-run")
        test_lane.close()
        redis.Redis.from_url(stack.redis_url).flushdb()
        durable = _reconciled(test_lane, "cancel-run", STS_BROKER_URL="redis://127.0.0.1:1/0")
        listed = test_lane.cli("runs", "--json", STS_LIMITER_URL="redis://127.0.0.1:1/0")
    stats = sts_stats(slow_sts)
    assert stats["requests_total"] == at_cancel["requests_total"], (at_cancel, stats)  # nothing started after
    control = json.loads(s3.get_object(Bucket=bucket, Key="runs/cancel-run/control.json")["Body"].read())
    assert control["state"] == "cancelled" and control["actions"][0]["why"] == "wrong voice"
    assert "@" in control["actions"][0]["who"]
    cancel_at = datetime.fromisoformat(control["actions"][0]["at"])
    records = _records(s3, bucket)
    succeeded = records["provenance"]
    assert 5 <= succeeded <= 5 + 2 + 2 and stats["successes"] == succeeded, (records, stats)
    for i in range(JOBS):
        key = f"out/clip{i}.pcm.provenance.json"
        try:
            record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            failure = json.loads(s3.get_object(Bucket=bucket, Key=f"out/clip{i}.pcm.failure.json")["Body"].read())
            assert failure["status"] == "cancelled" and failure["error"]["reason"] == "cancelled"
            assert failure["cost"]["requests"] == 0
            continue
        assert all(datetime.fromisoformat(a["started_at"]) < cancel_at for a in record["attempts"])
    for totals in (live, durable):
        assert totals["succeeded"] == succeeded and totals["cancelled"] == JOBS - succeeded, totals
        assert totals["missing"] == 0 and totals["failed"] == 0, totals
    _check_result_files(s3, bucket, succeeded)
    assert listed.returncode == 0, listed.stderr[-2000:]
    [run] = json.loads(listed.stdout)
    assert run["run_id"] == "cancel-run" and run["state"] == "cancelled", run
    assert run["counts"] == {"succeeded": succeeded, "cancelled": JOBS - succeeded} and run["ended_at"], run
    assert log.count("run cancel-run finished: wrote") == 1, log[-3000:]
    assert "CANCELLED" in status.stdout and "wrong voice" in status.stdout, status.stdout + status.stderr


PAUSE_JOBS = 30
PAUSE_S = 20


def _commands(client: redis.Redis) -> int:
    """Every command Redis has run so far (``INFO commandstats``)."""
    return sum(int(stats["calls"]) for name, stats in client.info("commandstats").items()
               if name.startswith("cmdstat_"))


def test_pause_parks_the_run_without_churn_and_resume_pays_each_job_once(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str) -> None:
    source = write_input(tmp_path / "in.wav", 1.0, seed=2)
    lines = []
    for i in range(PAUSE_JOBS):
        s3.upload_file(str(source), bucket, f"in/p{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/p{i}.wav", "voice_id": VOICES[i % 4], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/p{i}.pcm"})
    manifest = write_jsonl(tmp_path / "pause.jsonl", lines)
    client = redis.Redis.from_url(stack.redis_url)
    with lane(stack, STS_API_BASE_URL=slow_sts, STS_MAX_CONCURRENT_REQUESTS="2", STS_REQUEUE_DELAY_S="2",
              STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "pause-run")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: _records(s3, bucket)["provenance"] >= 2, 120, "2 jobs to succeed")
        paused = test_lane.cli("pause", "pause-run", "--why", "budget owner asked")
        assert paused.returncode == 0, paused.stderr[-2000:]
        at_pause = sts_stats(slow_sts)["requests_total"]
        wait_until(lambda: sts_stats(slow_sts)["in_flight"] == 0, 30, "the requests in flight to end")
        time.sleep(5)  # the jobs handed back by their attempt loop come back (2 s) and are parked
        before, started = _commands(client), time.monotonic()
        time.sleep(PAUSE_S)
        per_s = (_commands(client) - before) / (time.monotonic() - started)
        during = sts_stats(slow_sts)["requests_total"]
        done_during = _records(s3, bucket)["provenance"]
        resumed = test_lane.cli("resume", "pause-run")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        wait_until(lambda: _records(s3, bucket)["provenance"] == PAUSE_JOBS, 180, "every job after resume")
    assert during == at_pause, (at_pause, during)  # no request started while paused
    assert done_during < PAUSE_JOBS
    assert per_s < 50, per_s
    stats = sts_stats(slow_sts)
    assert stats["successes"] == PAUSE_JOBS and stats["requests_total"] == PAUSE_JOBS, stats  # each paid once
    for i in range(PAUSE_JOBS):
        record = json.loads(s3.get_object(Bucket=bucket, Key=f"out/p{i}.pcm.provenance.json")["Body"].read())
        assert [a["outcome"] for a in record["attempts"]] == ["ok"]
    control = json.loads(s3.get_object(Bucket=bucket, Key="runs/pause-run/control.json")["Body"].read())
    assert [a["what"] for a in control["actions"]] == ["pause", "resume"] and control["state"] is None
    assert "parked" in paused.stderr and "resumed" in resumed.stderr


def test_a_paused_run_that_is_cancelled_ends_every_parked_job_cancelled(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str) -> None:
    source = write_input(tmp_path / "in.wav", 1.0, seed=3)
    lines = []
    for i in range(6):
        s3.upload_file(str(source), bucket, f"in/c{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/c{i}.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/c{i}.pcm"})
    manifest = write_jsonl(tmp_path / "parked.jsonl", lines)
    with lane(stack, STS_API_BASE_URL=slow_sts, STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        assert test_lane.cli("submit", str(manifest), "--run-id", "parked-run").returncode == 0
        paused = test_lane.cli("pause", "parked-run")
        assert "6 queued job(s) parked" in paused.stderr, paused.stderr
        assert queued(redis.Redis.from_url(stack.redis_url), test_lane.queue) == 0
        assert test_lane.cli("cancel", "parked-run").returncode == 0
        test_lane.start_worker(concurrency=2)
        wait_until(lambda: _records(s3, bucket)["failure"] == 6, 60, "every parked job to end cancelled")
    assert sts_stats(slow_sts)["requests_total"] == 0


def _started(s3, bucket: str, prefix: str, field: str = "started_at") -> list[datetime]:  # type: ignore[no-untyped-def]
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", []) if item["Key"].endswith(".provenance.json")]
    return sorted(datetime.fromisoformat(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                                         ["timings"][field]) for key in keys)


#: what a task does before its provenance start time (claim, S3 check, live-state marks: 20-40 ms measured here): a
#: low job whose task began before the high run was on the queue may record its start up to this much after
START_RECORDED_WITHIN_S = 0.25


class _FirstPush(threading.Thread):
    """Watches Redis (MONITOR) for the first LPUSH onto ``key``: when the high run's first message was on the queue.

    The high run's own ``queued_at`` is taken before its messages are sent (20-75 ms before, measured here), so a low
    job that started in between would count as overtaking although no high job existed yet."""

    def __init__(self, redis_url: str, key: str) -> None:
        super().__init__(daemon=True)
        self._client = redis.Redis.from_url(redis_url, socket_timeout=120)
        self._prefix = f"LPUSH {key} "
        self.ready = threading.Event()
        self.at: datetime | None = None

    def run(self) -> None:
        with self._client.monitor() as monitor:
            self.ready.set()
            while self.at is None and (command := monitor.next_command()):
                if command["command"].startswith(self._prefix):
                    self.at = datetime.fromtimestamp(command["time"], UTC)


def test_a_high_priority_run_overtakes_queued_low_work_and_the_low_run_finishes(
        stack: LocalStack, s3, bucket: str, tmp_path: Path, slow_sts: str) -> None:
    source = write_input(tmp_path / "in.wav", 1.0, seed=5)
    def shard(name: str, count: int) -> Path:
        lines = []
        for i in range(count):
            s3.upload_file(str(source), bucket, f"in/{name}{i}.wav")
            lines.append({"input": f"s3://{bucket}/in/{name}{i}.wav", "voice_id": VOICES[0],
                          "output_format": "pcm_16000", "output": f"s3://{bucket}/out/{name}/{i}.pcm"})
        return write_jsonl(tmp_path / f"{name}.jsonl", lines)

    low, high = shard("low", 60), shard("high", 3)
    with lane(stack, STS_API_BASE_URL=slow_sts, STS_MAX_CONCURRENT_REQUESTS="2",
              STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        test_lane.start_worker(concurrency=2)
        assert test_lane.cli("submit", str(low), "--priority", "low").returncode == 0
        wait_until(lambda: len(_started(s3, bucket, "out/low/")) >= 4, 120, "4 low jobs")
        first_push = _FirstPush(stack.redis_url, test_lane.queue)  # priority 0 is kombu's base list
        first_push.start()
        assert first_push.ready.wait(10)
        assert test_lane.cli("submit", str(high), "--priority", "high").returncode == 0
        first_push.join(10)
        wait_until(lambda: len(_started(s3, bucket, "out/")) == 63, 240, "both runs to finish")
    high_started, queued = _started(s3, bucket, "out/high/"), first_push.at
    assert queued is not None and len(high_started) == 3
    # a low message a worker had taken off the queue when the high run arrived is handed back when its task starts
    # (pipeline/run/handback.py): no low job starts after the high run is queued and before its last job starts
    overtaken = [t for t in _started(s3, bucket, "out/low/")
                 if queued + timedelta(seconds=START_RECORDED_WITHIN_S) < t < high_started[-1]]
    assert overtaken == [], (queued, high_started, overtaken)
    assert sts_stats(slow_sts)["requests_total"] == 63  # a message handed back ran once, none was lost


@pytest.fixture
def slower_sts(tmp_path: Path) -> Iterator[str]:
    with LocalStack(workdir=tmp_path / "slower") as own:
        own.start_sts("--latency-fixed", "8")
        yield own.sts_url


def test_cancel_now_abandons_the_requests_in_flight(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                    slower_sts: str) -> None:
    source = write_input(tmp_path / "in.wav", 1.0, seed=6)
    lines = []
    for i in range(4):
        s3.upload_file(str(source), bucket, f"in/x{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/x{i}.wav", "voice_id": VOICES[0], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/x{i}.pcm"})
    manifest = write_jsonl(tmp_path / "now.jsonl", lines)
    with lane(stack, STS_API_BASE_URL=slower_sts, STS_MAX_CONCURRENT_REQUESTS="2",
              STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        test_lane.start_worker(concurrency=2)
        assert test_lane.cli("submit", str(manifest), "--run-id", "now-run").returncode == 0
        wait_until(lambda: sts_stats(slower_sts)["in_flight"] == 2, 60, "two requests in flight")
        cancelled = test_lane.cli("cancel", "now-run", "--now")
        assert cancelled.returncode == 0 and "(--now)" in cancelled.stderr, cancelled.stderr
        wait_until(lambda: _records(s3, bucket)["failure"] == 4, 30, "every job to end cancelled")
    assert _records(s3, bucket)["provenance"] == 0  # the two streams were abandoned, not received and kept
    assert sts_stats(slower_sts)["requests_total"] == 2
    outcomes = []
    for i in range(4):
        failure = json.loads(s3.get_object(Bucket=bucket, Key=f"out/x{i}.pcm.failure.json")["Body"].read())
        assert failure["status"] == "cancelled"
        outcomes += [(a["outcome"], "abandoned after" in (a["message"] or "")) for a in failure["attempts"]]
    assert outcomes == [("cancelled", True)] * 2, outcomes
