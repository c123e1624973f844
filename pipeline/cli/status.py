"""``sts-pipeline status``: a run's live counts from Redis. The durable answer is ``reconcile`` (S3)."""

from __future__ import annotations

import sys
import time
from datetime import UTC
from typing import TYPE_CHECKING

import click

from pipeline.cli._base import main

if TYPE_CHECKING:
    from collections import Counter

    from rich.console import Group

    from pipeline.run.state import RunState

REFRESH_S = 1.0


def _view(state: RunState, counts: Counter[str]) -> Group:
    from datetime import datetime

    from rich.console import Group
    from rich.text import Text

    from pipeline.run.progress import counts_table, done_count

    meta = state.meta()
    total = int(meta.get("jobs", sum(counts.values())))
    created = meta.get("created_at")
    since = (f", submitted {datetime.fromtimestamp(float(created), UTC):%Y-%m-%d %H:%M:%S} UTC"
             if created else "")
    priority = f", priority {meta['priority']}" if meta.get("priority") else ""
    lines = [Text(f"{done_count(counts)} of {total} done{since}{priority}")]
    halted = state.halted()
    if halted:
        lines.append(Text(f"HALTED: {halted}", style="bold red"))
    if paused := state.paused():
        lines.append(Text(f"PAUSED: {paused}", style="bold yellow"))
    if state.held():
        lines.append(Text("PAUSED by an operator (sts-pipeline resume carries on)", style="bold yellow"))
    if cancelled := state.cancelled():
        lines.append(Text(f"CANCELLED: {_cancel_line(cancelled)}", style="bold yellow"))
    return Group(counts_table(f"run {state.run_id}", counts), *lines)


def _cancel_line(record: str) -> str:
    """Who cancelled, when and why, from the cancel's JSON in Redis (``pipeline.run.control``)."""
    import json

    from pipeline.text import printable

    try:
        data = json.loads(record)
    except ValueError:
        return "yes"
    why = f": {data['why']}" if data.get("why") else ""
    return printable(f"by {data.get('who', '?')} at {data.get('at', '?')}{why}")


@main.command()
@click.argument("run_id")
@click.option("--watch", is_flag=True, help="Refresh every second until every job is done (or Ctrl-C).")
def status(run_id: str, watch: bool) -> None:
    """Live counts of RUN_ID's jobs by state (queued, running, succeeded, failed, rejected, deferred, skipped,
    cancelled), and whether the run was halted or cancelled."""
    import redis
    from rich.console import Console
    from rich.live import Live

    from pipeline.config import get_settings
    from pipeline.run.progress import done_count
    from pipeline.run.state import RunState
    from pipeline.run.stored import check_run_id

    console = Console()
    settings = get_settings()
    state = RunState(redis.Redis.from_url(settings.limiter_redis_url), check_run_id(run_id))
    gone = (f"Redis has no state for run {run_id} (expired or flushed): use `sts-pipeline reconcile --run {run_id}` "
            "for the durable answer from S3")
    try:
        if not state.exists():
            click.echo(gone, err=True)
            sys.exit(1)
        counts = state.counts()
        if not watch:
            console.print(_view(state, counts))
            return
        total = int(state.meta().get("jobs", 0))
        with Live(_view(state, counts), console=console, refresh_per_second=4) as live:
            while done_count(counts) < total:
                time.sleep(REFRESH_S)
                if not state.exists():
                    click.echo(gone, err=True)
                    sys.exit(1)
                counts = state.counts()
                live.update(_view(state, counts))
    except KeyboardInterrupt:
        return  # the user stopped watching; the run goes on
    except redis.RedisError as error:
        raise click.ClickException(
            f"Redis did not answer ({error}): check STS_BROKER_URL and STS_LIMITER_URL") from None
