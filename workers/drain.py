"""Wires the graceful drain (``pipeline.conversion.drain``) into Celery's worker.

- ``worker_init`` (main process, before the pool forks): a fresh flag file, named to the children through the env;
- ``worker_ready`` (main process, after Celery installed its own signal handlers): SIGTERM, SIGQUIT and SIGINT first
  raise the flag, then do what Celery does with them (warm, or with ``REMAP_SIGTERM=SIGQUIT`` cold shutdown with its
  soft phase). The flag goes up before Celery's handler, which may sleep through the whole soft shutdown.

Celery 5.7's soft shutdown is a plain ``sleep`` inside that handler: the worker's event loop, and with it the
visibility heartbeat's timer, stand still for the whole timeout. Without a beat the jobs still running would be
re-queued by another worker's sweep after one visibility timeout, and the probe file would go stale, so a liveness
probe could kill the pod mid-drain. So the first signal also starts a keep-alive thread that goes on beating (the
same ``VisibilityHeartbeat.beat``: re-score held deliveries, say alive, touch the file) until the process exits.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from celery.signals import worker_init, worker_ready

from pipeline.conversion import drain
from workers.heartbeat import VisibilityHeartbeat

__all__ = ["connect"]

_SIGNALS = ("SIGTERM", "SIGQUIT", "SIGINT")


def _prepare(**_: Any) -> None:
    drain.prepare()


def _wrap_signals(**_: Any) -> None:
    for name in _SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous = signal.getsignal(signum)
        if getattr(previous, "_sts_drain", False):
            continue

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            drain.begin()
            _keep_beating()
            if callable(previous):
                previous(sig, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
                signal.raise_signal(sig)

        handler._sts_drain = True  # type: ignore[attr-defined]
        signal.signal(signum, handler)


_keepalive: threading.Thread | None = None


def _keep_beating() -> None:
    """Start (once) a daemon thread that beats while Celery's soft shutdown sleeps in the main thread."""
    global _keepalive
    heartbeat = VisibilityHeartbeat.current
    if _keepalive is not None or heartbeat is None:
        return

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(heartbeat.interval_s):
            try:
                heartbeat.beat()
            except Exception:  # e.g. the held set changed under us once the main thread woke: beat again later
                continue

    _keepalive = threading.Thread(target=run, name="sts-drain-keepalive", daemon=True)
    _keepalive.start()


def connect() -> None:
    """Connect the drain to the worker's life cycle (idempotent; does nothing outside a worker)."""
    worker_init.connect(_prepare, weak=False, dispatch_uid="sts-drain-prepare")
    worker_ready.connect(_wrap_signals, weak=False, dispatch_uid="sts-drain-signals")
