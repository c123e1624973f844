"""The task message: what the submit side puts on the queue for one job, and all a worker needs to find it again.

It holds the job and its place in the manifest, never a secret (the worker reads the key from its own settings).
With tracing on (``pipeline.ops.tracing``) it also carries the submit span's W3C trace context in ``trace``: in the
body rather than in Celery's headers, so it survives what moves bodies alone (pause parks them, resume re-sends them).
A message without it (tracing off, an older submit) decodes as before, and an older worker ignores the field.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

__all__ = ["PRIORITIES", "TASK_CONVERT", "JobMessage", "task_id"]

#: the Celery task name of one job (workers/tasks.py registers it; submit sends to it). The queue's contract: keep it.
TASK_CONVERT = "sts.convert"
#: a run's priority -> the kombu message priority its jobs are sent with (kombu on Redis: 0 is served first; the steps
#: 0, 3, 6, 9 are its lists ``<queue>``, ``<queue>\x06\x163``, ...). Every run is sent with one, so a message without
#: a priority (an older submit) is the only kind that lands in the base list with ``high``.
PRIORITIES = {"high": 0, "normal": 3, "low": 6}


@dataclass(frozen=True)
class JobMessage:
    """What a task message carries: the job, its place in the manifest, and its run."""

    run_id: str
    shard: str
    line: int
    job_id: str
    output: str
    job: dict[str, Any]
    queued_at: float
    #: the W3C trace context (``traceparent``, ``tracestate``) of the run's submit span; None when not traced
    trace: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["trace"] is None:  # an untraced message stays what it was before the field
            del data["trace"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobMessage:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.default is MISSING})


def task_id(run_id: str, job_id: str) -> str:
    """Celery task id: the run and the job, so a job's deliveries in one run are easy to find."""
    return f"{run_id}:{job_id}"
