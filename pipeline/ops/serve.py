"""A worker's ``/metrics``: prometheus-client's multiprocess mode, so that every prefork child's counts are served.

Each pool process writes its values to memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR``; the main process serves
the sum. The directory is one per worker (two workers on a host must not add up each other's files), emptied at
start (files of an earlier worker's children would count twice), and a child that exits is marked dead so that its
live gauges go. Its counters stay, as they should: ``worker_max_tasks_per_child`` replaces children all night.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["multiprocess_dir", "serve_worker_metrics"]

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(port: int) -> Path:
    """Set up (and empty) this worker's multiprocess directory and point ``PROMETHEUS_MULTIPROC_DIR`` at it.

    A directory named by the environment is used (and emptied); otherwise a fresh one per worker under the temp dir.
    """
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"sts-metrics-{port}-"))
    os.environ[ENV] = str(path)
    return path


def serve_worker_metrics(port: int, addr: str = "0.0.0.0") -> Path:
    """Serve the worker's metrics on ``port`` from the main process; call before the pool forks.

    Returns the multiprocess directory.
    """
    path = multiprocess_dir(port)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    start_http_server(port, addr=addr, registry=registry)
    _mark_children_dead_on_exit()
    log.info("metrics on :%d (multiprocess dir %s)", port, path)
    return path


def _mark_children_dead_on_exit() -> None:
    from celery.signals import worker_process_shutdown

    def dead(pid: int | None = None, **_: Any) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid or os.getpid())
        except Exception as error:  # never in the way of a child's exit
            log.debug("metrics: child not marked dead (%s)", type(error).__name__)

    worker_process_shutdown.connect(dead, weak=False)
