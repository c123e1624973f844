"""The two clients the pipeline is compared with, run against the same offline server and the same inputs.

- ``sdk_loop``: what a user writes first: a sequential loop over the vendor's SDK (download with boto3, convert,
  upload). It cannot beat one request at a time: 1 / mean(L) jobs a second.
- ``naive_workers``: Celery workers calling the API directly, each throttled by a per-worker ``rate_limit`` that
  would respect the plan's cap if that worker were alone (``bench/naive_celery.py``).

Both are bounded in jobs and in time; both report what they finished, what failed, what the server answered, and
an ``Observation`` of the server (occupancy, stretch) and of the CPU while they ran.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from elevenlabs import ElevenLabs

from bench.common import REPO_ROOT, BatchJob, LatencyModel, Observation, s3_client, server_stats, wait_for_log
from bench.naive_celery import TASK_NAME as NAIVE_TASK
from pipeline.local.services import LocalStack, Service
from pipeline.s3uri import S3Uri

SDK_API_KEY = "bench-sdk-key"
NAIVE_API_KEY = "bench-naive-key"
NAIVE_QUEUE = "bench-naive"


def _infrastructure(stack: LocalStack) -> dict[str, list[Service]]:
    return {"offline STS server": [stack.service("sts")], "S3 (moto)": [stack.service("s3")],
            "redis": [stack.service("redis")]}


def sdk_loop(stack: LocalStack, jobs: Sequence[BatchJob], *, output_prefix: str, output_format: str,
             model: LatencyModel, cap: int, timeout_s: float) -> dict[str, Any]:
    """Convert ``jobs`` one after another with the vendor SDK; stop starting new ones after ``timeout_s``."""
    client = ElevenLabs(api_key=SDK_API_KEY, base_url=stack.sts_url)
    s3 = s3_client(stack, pool=2)
    target = S3Uri.parse(output_prefix)
    done: list[BatchJob] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-sdk-") as tmp, Observation(stack.sts_url,
                                                                              _infrastructure(stack)) as seen:
        for job in jobs:
            if time.monotonic() - seen.started > timeout_s:
                break
            source = S3Uri.parse(job.input)
            try:
                audio = s3.get_object(Bucket=source.bucket, Key=source.key)["Body"].read()
                out = Path(tmp) / f"{job.index}.out"
                with open(out, "wb") as sink:
                    for chunk in client.speech_to_speech.convert(
                            job.voice_id, audio=("input.wav", audio, "audio/wav"), model_id="eleven_english_sts_v2",
                            output_format=output_format, seed=job.seed):  # type: ignore[arg-type]
                        sink.write(chunk)
                s3.upload_file(str(out), target.bucket, f"{target.key.rstrip('/')}/{job.index:04d}.out")
            except Exception as error:  # noqa: BLE001 - a baseline counts its failures, whatever they are
                failures.append(f"{type(error).__name__}: {error}"[:200])
                continue
            done.append(job)
    return {"jobs": len(done) + len(failures), "ok": len(done), "failed": len(failures), "unfinished": 0,
            "failures": failures[:5], "wall_s": seen.ended - seen.started, "audio_s": [j.audio_s for j in done],
            "server": server_stats(stack.sts_url),
            "observed": seen.summary([model.seconds(j.audio_s) for j in done], cap)}


def naive_workers(stack: LocalStack, jobs: Sequence[BatchJob], *, output_prefix: str, output_format: str,
                  rate_limit: str, workers: int, concurrency: int, model: LatencyModel, cap: int,
                  timeout_s: float, pool: str = "prefork") -> dict[str, Any]:
    """Run ``jobs`` through the naive Celery app with ``workers`` workers of ``pool``; wait at most ``timeout_s``."""
    tag = f"run{int(time.time())}"
    env = {**stack.env(), "PYTHONPATH": str(REPO_ROOT), "BENCH_NAIVE_BROKER_URL": stack.redis_url,
           "BENCH_NAIVE_QUEUE": NAIVE_QUEUE, "BENCH_NAIVE_RATE_LIMIT": rate_limit,
           "BENCH_NAIVE_API_KEY": NAIVE_API_KEY}
    services = []
    for n in range(workers):
        argv = [sys.executable, "-m", "celery", "-A", "bench.naive_celery", "worker", "-P", pool, "-c",
                str(concurrency), "-Q", NAIVE_QUEUE, "--hostname", f"naive{n}@%h", "--without-gossip",
                "--without-mingle", "--loglevel", "INFO"]
        service = Service(f"naive{n}", argv, env, stack.workdir / f"naive{n}.log").start()
        stack.services.append(service)
        services.append(service)
    for service in services:
        wait_for_log(service, "ready.", 90)
    counters = redis.Redis.from_url(stack.redis_url)
    sender = Celery("naive_sender", broker=stack.redis_url)
    prefix = output_prefix.rstrip("/")
    started = time.time()
    try:
        with Observation(stack.sts_url, {**_infrastructure(stack), "naive workers": services}) as seen:
            with sender.producer_or_acquire() as producer:
                for job in jobs:
                    line = {**job.line(f"{prefix}/{job.index:04d}.out", output_format), "tag": tag,
                            "index": job.index}
                    sender.send_task(NAIVE_TASK, args=[line], queue=NAIVE_QUEUE, producer=producer)
            while time.monotonic() - seen.started < timeout_s:
                finished = counters.llen(f"naive:{tag}:done") + int(counters.get(f"naive:{tag}:failed") or 0)
                if finished >= len(jobs):
                    break
                time.sleep(0.25)
        done = [entry.decode().split() for entry in counters.lrange(f"naive:{tag}:done", 0, -1)]
        done_at = [float(at) for at, _ in done]
        done_indexes = {int(index) for _, index in done}
        failed = int(counters.get(f"naive:{tag}:failed") or 0)
        retried = int(counters.get(f"naive:{tag}:retried") or 0)
        stats = server_stats(stack.sts_url)
    finally:
        for service in services:
            service.stop()
        counters.close()
    finished_all = len(done_at) + failed >= len(jobs)
    wall_s = (max(done_at) - started) if finished_all and done_at else seen.ended - seen.started
    admitted = [model.seconds(job.audio_s) for job in jobs if job.index in done_indexes]  # 429s are not admitted
    return {"jobs": len(jobs), "ok": len(done_at), "failed": failed, "unfinished": len(jobs) - len(done_at) - failed,
            "retried": retried, "wall_s": wall_s, "timed_out": not finished_all, "rate_limit": rate_limit,
            "workers": workers, "concurrency": concurrency, "pool": pool, "server": stats,
            "observed": seen.summary(admitted, cap, seen.started, seen.started + wall_s)}
