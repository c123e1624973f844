"""The worker's two pools: what each is configured with, and one process-wide context for a threads worker's jobs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pipeline.config import Settings
from workers import tasks
from workers.app import create_app


def test_prefork_gets_the_time_limits_and_child_replacement() -> None:
    conf = create_app(Settings(task_time_limit_s=3600), pool="prefork").conf
    assert (conf.task_time_limit, conf.task_soft_time_limit, conf.worker_max_tasks_per_child) == (3600, 3540, 500)


def test_threads_gets_neither_since_a_thread_cannot_be_interrupted_or_replaced() -> None:
    conf = create_app(Settings(task_time_limit_s=3600), pool="threads").conf
    assert conf.task_time_limit is None and conf.task_soft_time_limit is None
    assert conf.worker_max_tasks_per_child is None
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1


def test_the_pool_defaults_to_the_setting() -> None:
    assert create_app(Settings(worker_pool="threads")).conf.task_time_limit is None
    assert create_app(Settings(worker_pool="prefork", task_time_limit_s=60.5)).conf.task_time_limit == 60.5


def test_jobs_starting_at_once_on_threads_share_one_context(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    def slow_build(settings: Any) -> object:
        time.sleep(0.05)  # wide enough for every thread to pass an unlocked "is there one yet?" check
        built.append(object())
        return built[-1]

    monkeypatch.setattr(tasks, "_context", None)
    monkeypatch.setattr(tasks.WorkerContext, "from_settings", staticmethod(slow_build))
    monkeypatch.setattr(tasks, "get_settings", lambda: Settings())
    seen: list[object] = []
    start = threading.Barrier(16)

    def job() -> None:
        start.wait()
        seen.append(tasks.worker_context())

    threads = [threading.Thread(target=job) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert len(seen) == 16 and all(context is built[0] for context in seen)
