"""Wires the graceful drain (``pipeline.conversion.drain``) into Celery's worker.

- ``worker_init`` (main process, before the pool forks): a fresh flag file, named to the children through the env;
- ``worker_ready`` (main process, after Celery installed its own signal handlers): SIGTERM, SIGQUIT and SIGINT first
  raise the flag, then do what Celery does with them (warm, or with ``REMAP_SIGTERM=SIGQUIT`` cold shutdown with its
  soft phase). The flag goes up before Celery's handler, which may sleep through the whole soft shutdown.
"""

from __future__ import annotations

import signal
from typing import Any

from celery.signals import worker_init, worker_ready

from pipeline.conversion import drain

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
            if callable(previous):
                previous(sig, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
                signal.raise_signal(sig)

        handler._sts_drain = True  # type: ignore[attr-defined]
        signal.signal(signum, handler)


def connect() -> None:
    """Connect the drain to the worker's life cycle (idempotent; does nothing outside a worker)."""
    worker_init.connect(_prepare, weak=False, dispatch_uid="sts-drain-prepare")
    worker_ready.connect(_wrap_signals, weak=False, dispatch_uid="sts-drain-signals")
