"""Waiting for a run: poll its live state in Redis and show progress until every job is terminal."""

from __future__ import annotations

import time
from collections import Counter

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.runstate import JobState, RunState

TERMINAL = [s.value for s in JobState if s.terminal]


def done_count(counts: Counter[str]) -> int:
    return sum(counts.get(state, 0) for state in TERMINAL)


def wait_for_run(client: redis.Redis, run_id: str, total: int, *, console: Console, poll_s: float = 0.5,
                 timeout_s: float | None = None) -> Counter[str]:
    """Show a progress bar until every job of the run is terminal (or the timeout passes); return the counts."""
    state = RunState(client, run_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(run_id, total=total, detail="")
        while True:
            counts = state.counts()
            detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            progress.update(bar, completed=done_count(counts), detail=detail)
            if done_count(counts) >= total or (deadline is not None and time.monotonic() > deadline):
                return counts
            time.sleep(poll_s)


def counts_table(title: str, counts: Counter[str]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in JobState:
        table.add_row(state.value, str(counts.get(state.value, 0)))
    table.add_row("[bold]total", f"[bold]{sum(counts.values())}")
    return table
