"""``sts-pipeline plan``: what a batch will cost and take, before anything is spent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli._base import main


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output-prefix", default=None, help="s3://bucket/prefix for lines without an output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--concurrency", type=int, default=None,
              help="Requests in flight to plan for (default: the limiter's current cap, else the configured one).")
def plan(manifests: tuple[Path, ...], output_prefix: str | None, as_json: bool, concurrency: int | None) -> None:
    """Validate MANIFESTS, check them against the account, and estimate jobs, audio seconds, credits and wall time
    without converting anything. Exits 1 if a line or the account's answer is a problem."""
    import redis
    from rich.console import Console
    from rich.table import Table

    from pipeline.api.limiter import Limiter
    from pipeline.cli._preflight import check_account
    from pipeline.config import get_settings
    from pipeline.manifest.load import ManifestLimits, load_manifests
    from pipeline.run.plan import Plan, ShardPlan, make_plan
    from pipeline.storage.s3 import Storage

    console = Console(stderr=True)
    settings = get_settings()
    shards = load_manifests(list(manifests), output_prefix=output_prefix, limits=ManifestLimits.from_settings(settings))
    problems = [p for shard in shards for p in shard.problems]
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if concurrency is None:
        try:
            limiter = Limiter.from_settings(
                settings, redis.Redis.from_url(settings.limiter_redis_url, socket_connect_timeout=2))
            concurrency = limiter.effective_cap()
        except redis.RedisError:
            concurrency = settings.max_concurrent_requests or 1
    result = make_plan(Storage.from_settings(settings), shards, settings, concurrency=concurrency)
    account = check_account(settings, shards, result, console=console)
    refused = len(account.problems) + (1 if account.credit_problem() else 0) if account else 0
    if as_json:
        data = result.to_dict()
        if account is not None:
            data["preflight"] = {"problems": [str(p) for p in account.problems],
                                 "credits_left": account.credits_left, "shortfall": account.shortfall,
                                 "tier": account.subscription.tier if account.subscription else None}
        click.echo(json.dumps(data, indent=2))
    else:
        table = Table(title=f"plan at {result.concurrency} concurrent requests ({result.basis} rates)")
        for column in ("shard", "jobs", "done", "to run", "audio s", "credits", "wall s"):
            table.add_column(column, justify="right" if column != "shard" else "left")
        items: list[ShardPlan | Plan] = [*result.shards, result]
        for item in items:
            name = item.name if isinstance(item, ShardPlan) else "[bold]total"
            table.add_row(name, str(item.jobs), str(item.skipped), str(item.to_run), f"{item.audio_seconds:.1f}",
                          f"{item.estimated_credits:.0f}", f"{item.estimated_seconds:.0f}")
        Console().print(table)
        for shard_plan in result.shards:
            for line in shard_plan.unprobed:
                console.print(f"{shard_plan.name}: could not probe {line}", markup=False)
    sys.exit(1 if problems or refused else 0)
