"""Graceful drain: once its worker is told to stop, a job starts no new request; it hands itself back instead.

Celery's soft shutdown lets running tasks go on for ``STS_SOFT_SHUTDOWN_TIMEOUT_S`` and then cancels what is still
running. A request in flight when the signal came is allowed to end (the timeout outlasts its deadline), but a job
with more to do (the next segment of a long recording, a retry after a 5xx) would start a request the cancel then
cuts: paid for, lost, and paid again by whoever finishes the job. So the worker's main process marks a flag file when
a shutdown signal arrives (``workers/drain.py``), and before every request the attempt loop asks ``check()``: while
draining it raises ``SlotUnavailableError``, which sends the job back to the queue undecided at once. What was paid
for stays: a finished job commits, a finished segment is already checkpointed in S3 and is not converted again.

The flag is a file named by ``STS_DRAIN_FILE``, set in the main process before the pool forks, so every pool process
(and every replacement child) sees the same one; a threads worker's jobs run in the main process and see it too.
Without it (tests, the demo, any other caller) nothing drains.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline.errors import SlotUnavailableError

__all__ = ["ENV", "begin", "check", "draining", "prepare"]

ENV = "STS_DRAIN_FILE"


def prepare() -> Path:
    """A fresh flag path for this worker (its main process), exported through ``STS_DRAIN_FILE`` to its children."""
    path = Path(tempfile.gettempdir()) / f"sts-drain-{os.getpid()}"
    path.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


def begin() -> None:
    """Raise the flag: from now on no job of this worker starts a request (safe inside a signal handler)."""
    path = os.environ.get(ENV)
    if path:
        try:
            Path(path).touch()
        except OSError:
            pass


def draining() -> bool:
    path = os.environ.get(ENV)
    return path is not None and path != "" and os.path.exists(path)


def check() -> None:
    """Raise ``SlotUnavailableError`` while the worker drains: the job goes back to the queue before it spends."""
    if draining():
        raise SlotUnavailableError("this worker is shutting down: the job goes back to the queue before another "
                                   "request (what it has paid for is kept)")
