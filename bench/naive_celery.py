"""The naive baseline: a plain Celery task that calls the API with httpx, throttled by Celery's own ``rate_limit``.

``rate_limit`` is per worker instance (celery docs, userguide/tasks.rst; /work/shared/notes/celery-on-redis.md §2),
so a rate that keeps one worker under the plan's cap lets two workers offer twice the cap. What that costs is
what the throughput benchmark counts: the server's 429s, and the jobs that still failed after ``MAX_RETRIES``.

Configured from the environment (the benchmark starts the workers):
``BENCH_NAIVE_BROKER_URL``, ``BENCH_NAIVE_QUEUE``, ``BENCH_NAIVE_RATE_LIMIT`` (Celery syntax, e.g. ``66/m``),
``BENCH_NAIVE_API_KEY``, and the stack's ``STS_API_BASE_URL`` / ``STS_S3_ENDPOINT_URL`` plus AWS variables.

Outcomes go to Redis, keyed by the job's ``tag``: ``naive:{tag}:done`` (list of "finish time (epoch s) index"),
``naive:{tag}:failed`` and ``naive:{tag}:retried`` (counters).
"""

from __future__ import annotations

import os
import time
from typing import Any

import boto3
import httpx
import redis
from botocore.config import Config
from celery import Celery, Task

TASK_NAME = "naive.convert"
MAX_RETRIES = 3
#: statuses worth a retry for this baseline (what a typical hand-written task retries)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

app = Celery("naive_bench", broker=os.environ.get("BENCH_NAIVE_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_default_queue=os.environ.get("BENCH_NAIVE_QUEUE", "naive"), task_acks_late=True,
                worker_prefetch_multiplier=1, task_ignore_result=True, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)

_clients: dict[str, Any] = {}


def _client(name: str) -> Any:
    """One client of each kind per worker process, made after the fork."""
    if name not in _clients:
        if name == "s3":
            _clients[name] = boto3.client("s3", endpoint_url=os.environ["STS_S3_ENDPOINT_URL"],
                                          config=Config(s3={"addressing_style": "path"}))
        elif name == "http":
            _clients[name] = httpx.Client(base_url=os.environ["STS_API_BASE_URL"], timeout=120,
                                          headers={"xi-api-key": os.environ["BENCH_NAIVE_API_KEY"]})
        else:
            _clients[name] = redis.Redis.from_url(os.environ["BENCH_NAIVE_BROKER_URL"])
    return _clients[name]


@app.task(bind=True, name=TASK_NAME, rate_limit=os.environ.get("BENCH_NAIVE_RATE_LIMIT"), max_retries=MAX_RETRIES,
          acks_late=True)
def convert(self: Task, job: dict[str, Any]) -> str:  # type: ignore[type-arg]
    """Download the input, POST it to the streaming endpoint, upload the audio; retry 429/5xx a few times."""
    counters = _client("redis")
    source_bucket, source_key = job["input"][5:].split("/", 1)
    audio = _client("s3").get_object(Bucket=source_bucket, Key=source_key)["Body"].read()
    response = _client("http").post(
        f"/v1/speech-to-speech/{job['voice_id']}/stream", params={"output_format": job["output_format"]},
        data={"model_id": "eleven_english_sts_v2", "seed": str(job["seed"])},
        files={"audio": ("input.wav", audio, "audio/wav")})
    if response.status_code == 200:
        out_bucket, out_key = job["output"][5:].split("/", 1)
        _client("s3").put_object(Bucket=out_bucket, Key=out_key, Body=response.content)
        counters.rpush(f"naive:{job['tag']}:done", f"{time.time()} {job['index']}")
        return "ok"
    if response.status_code in RETRY_STATUSES and self.request.retries < MAX_RETRIES:
        counters.incr(f"naive:{job['tag']}:retried")
        raise self.retry(countdown=float(response.headers.get("retry-after", 1)))
    counters.incr(f"naive:{job['tag']}:failed")
    return f"failed {response.status_code}"
