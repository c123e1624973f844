"""Waiting for a run: poll its live state in Redis and show progress until every job is terminal."""

from __future__ import annotations

import time
from collections import Counter

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.errors import RunStateLost
from pipeline.run.state import RunState
from pipeline.states import LIVE_STATES, NOT_SUCCEEDED

TERMINAL = [s.value for s in LIVE_STATES if s.terminal]
#: how long a waiting command rides out an unreachable Redis before it gives up
REDIS_OUTAGE_S = 120.0


def done_count(counts: Counter[str]) -> int:
    return sum(counts.get(state, 0) for state in TERMINAL)


def not_succeeded(counts: Counter[str]) -> int:
    """Jobs that failed, were rejected or deferred, or are still queued or running: a waiting command exits 1."""
    return sum(counts.get(state.value, 0) for state in NOT_SUCCEEDED)


def wait_for_run(client: redis.Redis, run_id: str, total: int, *, console: Console, poll_s: float = 0.5,
                 timeout_s: float | None = None, outage_s: float = REDIS_OUTAGE_S) -> Counter[str]:
    """Show a progress bar until every job of the run is terminal (or the timeout passes); return the counts.

    Rides out a Redis outage of up to ``outage_s``. Raises ``RunStateLost`` when Redis stays away longer, or comes
    back without the run's state (restarted empty, flushed): nothing would ever finish the wait then.
    """
    state = RunState(client, run_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    unreachable_since: float | None = None
    counts: Counter[str] = Counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run_id, total=total, detail="")
        while True:
            try:
                counts = state.counts()
                if not state.meta():  # only submit writes it; workers that outlived a wipe re-create jobs, not meta
                    raise RunStateLost(f"run {run_id}'s live state is gone from Redis (restarted empty, flushed or "
                                       f"expired): jobs still queued there were lost. The outcome so far is in S3: "
                                       f"`sts-pipeline reconcile --run {run_id}`, then `sts-pipeline retry --run "
                                       f"{run_id}`")
                unreachable_since = None
                detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                progress.update(bar, completed=done_count(counts), detail=detail)
                if done_count(counts) >= total:
                    return counts
            except redis.RedisError as error:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > outage_s:
                    raise RunStateLost(f"Redis has not answered for {outage_s:.0f} s ({type(error).__name__}); "
                                       f"stopped waiting for run {run_id}. Its workers go on if Redis returns: follow "
                                       f"it with `sts-pipeline status {run_id}` or, from S3, `sts-pipeline reconcile "
                                       f"--run {run_id}`") from None
                progress.update(bar, detail=f"Redis unreachable ({type(error).__name__}); waiting for it")
            if deadline is not None and time.monotonic() > deadline:
                return counts
            time.sleep(poll_s)


def counts_table(title: str, counts: Counter[str]) -> Table:
    table = Table(title=title, min_width=len(title) + 4)  # a title wider than the table would wrap
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in LIVE_STATES:
        table.add_row(state.value, str(counts.get(state.value, 0)))
    table.add_row("[bold]total", f"[bold]{sum(counts.values())}")
    return table
