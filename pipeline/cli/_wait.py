"""The end of ``submit --wait`` and ``retry --wait``: follow the run, print its counts, exit 1 unless all succeeded."""

from __future__ import annotations

import sys

import redis
from rich.console import Console

from pipeline.run.budget import Budget
from pipeline.run.progress import counts_table, not_succeeded, wait_for_run


def wait_and_exit(client: redis.Redis, run_id: str, jobs: int, *, console: Console, timeout_s: float | None,
                  show_credits: bool = True) -> None:
    counts = wait_for_run(client, run_id, jobs, console=console, timeout_s=timeout_s)
    console.print(counts_table(f"run {run_id}", counts))
    if show_credits:
        run_budget = Budget(client, run_id)
        limit = run_budget.limit()
        console.print(f"credits spent: {run_budget.spent():.0f}" + (f" of a budget of {limit:.0f}" if limit else ""))
    sys.exit(1 if not_succeeded(counts) else 0)
