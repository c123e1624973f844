"""A lane on the local services: its own queue, API key (so its own limiter) and settings, for one test or benchmark.

The test suite and the benchmarks share this one harness: start workers (optionally waiting until each says it is
ready), run the CLI, submit and wait for a run, and stop the workers again.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from pipeline.local.services import LocalStack, Service
from pipeline.run.progress import done_count
from pipeline.run.state import RunState

__all__ = ["Lane", "lane", "wait_for_log"]


@dataclass
class Lane:
    """One test's or benchmark's private lane on shared services."""

    stack: LocalStack
    queue: str
    api_key: str
    overrides: dict[str, str] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)
    #: the lane's workers' pool, ``prefork`` or ``threads`` (None: the worker's default, ``STS_WORKER_POOL`` among
    #: the overrides, else prefork)
    pool: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.stack.env(), "STS_QUEUE": self.queue, "STS_API_KEY": self.api_key, **self.overrides, **extra}

    def start_worker(self, concurrency: int = 2, **extra: str) -> Service:
        """A worker on the lane's queue converting ``concurrency`` jobs at once in the lane's pool."""
        service = self.stack.start_worker(concurrency, name=f"{self.queue}-w{len(self.workers)}",
                                          extra_env=self.env(**extra), pool=self.pool)
        self.workers.append(service)
        return service

    def start_workers(self, count: int, concurrency: int, ready_timeout_s: float = 90.0) -> list[Service]:
        """Start ``count`` workers of ``concurrency`` jobs each and wait until every one says it is ready."""
        started = [self.start_worker(concurrency) for _ in range(count)]
        for service in started:
            wait_for_log(service, "ready.", ready_timeout_s)
        return started

    def cli(self, *args: str, timeout_s: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout_s)

    def submit(self, manifest: Path, timeout_s: float = 120.0) -> str:
        """``sts-pipeline submit MANIFEST`` (no wait); return the run id it prints."""
        done = self.cli("submit", str(manifest), timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"submit failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def wait(self, run_id: str, total: int, timeout_s: float, poll_s: float = 0.25) -> Counter[str]:
        """Poll the run's live state until every job is terminal or ``timeout_s`` passes; return the counts."""
        client = redis.Redis.from_url(self.stack.redis_url)
        state = RunState(client, run_id)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                counts = state.counts()
                if done_count(counts) >= total or time.monotonic() > deadline:
                    return counts
                time.sleep(poll_s)
        finally:
            client.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()

    stop_workers = close


@contextmanager
def lane(stack: LocalStack, pool: str | None = None, **overrides: str) -> Iterator[Lane]:
    """A lane with a fresh queue and API key; its workers use ``pool`` (None: the worker's default, ``Lane.pool``)."""
    tag = uuid.uuid4().hex[:8]
    current = Lane(stack, queue=f"q-{tag}", api_key=f"test-key-{tag}", overrides=dict(overrides), pool=pool)
    try:
        yield current
    finally:
        current.close()


def wait_for_log(service: Service, text: str, timeout_s: float) -> None:
    """Block until ``text`` appears in the service's log (bounded; fails if the service exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.log_path.exists() and text in service.log_path.read_text(errors="replace"):
            return
        if not service.alive():
            raise RuntimeError(f"{service.name} exited before it was ready; see {service.log_path}")
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} was not ready after {timeout_s:.0f} s; see {service.log_path}")
