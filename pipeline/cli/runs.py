"""``sts-pipeline runs``: the recent runs, newest first, from S3 (any machine), with live counts when Redis has them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from pipeline.cli._base import main

if TYPE_CHECKING:
    from pipeline.run.catalog import RunSummary


def _live_counts(redis_url: str, summaries: list[RunSummary]) -> None:
    """Fill the counts of unfinished runs from Redis; a Redis that does not answer leaves them empty."""
    import redis

    from pipeline.run.state import RunState

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        for summary in summaries:
            if not summary.counts:  # no results.jsonl yet
                summary.counts = dict(RunState(client, summary.run_id).counts())
    except redis.RedisError:
        return
    finally:
        client.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of the table.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many runs.")
@click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX",
              help="Where runs are stored (default: STS_RUNS_URI).")
def runs(as_json: bool, limit: int, runs_uri: str | None) -> None:
    """The recent runs, newest first: state (running, cancelled, finished), counts by state, credits, start and end.

    Read from the runs root in S3; a finished run's counts and credits come from its results.jsonl, an unfinished
    run's counts from Redis when it answers.
    """
    from rich.console import Console
    from rich.table import Table

    from pipeline.config import get_settings
    from pipeline.run.catalog import recent_runs
    from pipeline.run.stored import runs_root
    from pipeline.storage.s3 import Storage

    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    summaries = recent_runs(Storage.from_settings(settings), runs_root(settings), limit=limit)
    _live_counts(settings.limiter_redis_url, summaries)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
        return
    table = Table("run", "state", "started (UTC)", "ended (UTC)", "counts", "credits")
    for s in summaries:
        table.add_row(s.run_id + (f" (retry of {s.retry_of})" if s.retry_of else ""), s.state,
                      f"{s.started_at:%Y-%m-%d %H:%M:%S}" if s.started_at else "",
                      f"{s.ended_at:%Y-%m-%d %H:%M:%S}" if s.ended_at else "",
                      ", ".join(f"{n} {state}" for state, n in sorted(s.counts.items())),
                      "" if s.credits is None else f"{s.credits:,.1f}")
    Console().print(table)
