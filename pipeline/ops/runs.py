"""Runs in flight, read from their live state in Redis (``pipeline.run.state``): which are running, paused or halted.

A run is in flight while any of its jobs is queued or running. Found with one SCAN of ``sts:run:*:meta``: run keys
expire two weeks after their last write, so the scan stays small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

from pipeline._redis import text
from pipeline.run.state import RunState
from pipeline.states import JobState

__all__ = ["RunView", "runs_in_flight"]

_META = re.compile(r"^sts:run:(.+):meta$")
#: a label value must stay small and bounded: run ids are ours (submit makes them), but read defensively
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class RunView:
    run_id: str
    state: str  # running | paused | halted
    queued: int
    running: int


def runs_in_flight(client: redis.Redis, limit: int = 200) -> list[RunView]:
    """The runs with a queued or running job (at most ``limit``), each with its state."""
    views = []
    for key in client.scan_iter(match="sts:run:*:meta", count=1000):
        found = _META.match(text(key))
        if not found or not _RUN_ID.match(found.group(1)):
            continue
        state = RunState(client, found.group(1))
        counts = state.counts()
        queued, running = counts.get(JobState.QUEUED.value, 0), counts.get(JobState.RUNNING.value, 0)
        if not queued and not running:
            continue
        mode = "halted" if state.halted() else "paused" if state.paused() else "running"
        views.append(RunView(found.group(1), mode, queued, running))
        if len(views) >= limit:
            break
    return views
