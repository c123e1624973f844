"""``sts-pipeline submit``: validate manifests, keep a copy of the run in S3, enqueue one task per job."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.cli._base import main


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run-id", default=None, help="Name the run (default: run-<UTC time>-<random>).")
@click.option("--output-prefix", default=None, help="s3://bucket/prefix for lines without an output.")
@click.option("--skip-invalid", is_flag=True, help="Enqueue the valid lines even if some are bad.")
@click.option("--force", is_flag=True, help="Also enqueue jobs that already have a provenance record.")
@click.option("--overwrite", is_flag=True, help="Let every job replace an object at its output that this pipeline "
                                               "did not write (as \"overwrite\": true on every line).")
@click.option("--budget", type=float, default=None, help="Credits this run may spend; jobs beyond it are deferred.")
@click.option("--allow-partial", is_flag=True,
              help="When the account has fewer credits left than the plan needs, spend what is left (the rest ends "
                   "deferred) instead of refusing.")
@click.option("--wait", is_flag=True, help="Show progress until every job is done; exit 1 if any failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True,
              help="Work of a higher run starts before queued work of a lower one (README: Priorities).")
@click.option("--notify", "notify_url", envvar="STS_NOTIFY_URL", default=None, metavar="URL",
              help="POST signed JSON events of the run here (STS_NOTIFY_SECRET signs them; README: Notifications).")
@click.option("--notify-interval", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds between run.progress events at most.")
def submit(manifests: tuple[Path, ...], run_id: str | None, output_prefix: str | None, skip_invalid: bool,
           force: bool, overwrite: bool, budget: float | None, allow_partial: bool, wait: bool,
           timeout: float | None, priority: str, notify_url: str | None, notify_interval: float) -> None:
    """Validate MANIFESTS, check them against the account, and enqueue their jobs; print the run id."""
    import redis
    from rich.console import Console

    from pipeline.cli._preflight import gate_run
    from pipeline.cli._wait import wait_and_exit
    from pipeline.config import get_settings
    from pipeline.manifest.load import ManifestLimits, load_manifests
    from pipeline.run.broker import check_broker
    from pipeline.run.notify import configure, tell
    from pipeline.run.stored import check_run_id, new_run_id, runs_root
    from pipeline.run.submit import start_run
    from pipeline.s3uri import S3Uri
    from pipeline.storage.s3 import Storage
    from workers.app import create_app

    console = Console(stderr=True)
    settings = get_settings()
    run_id = check_run_id(run_id or new_run_id())
    shards = load_manifests(list(manifests), output_prefix=output_prefix,
                            limits=ManifestLimits.from_settings(settings))
    problems = [p for shard in shards for p in shard.problems]
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if problems and not skip_invalid:
        console.print(f"{len(problems)} problem(s): nothing was enqueued (fix the lines, or use --skip-invalid)")
        sys.exit(1)
    entries = [e for shard in shards for e in shard.entries]
    if not entries:
        console.print("no valid jobs to enqueue")
        sys.exit(1)
    check_broker(settings)
    storage = Storage.from_settings(settings)
    shards, budget, refused = gate_run(settings, storage, shards, console=console, skip_invalid=skip_invalid,
                                       allow_partial=allow_partial, budget=budget)
    client = redis.Redis.from_url(settings.limiter_redis_url)
    if notify_url:  # before any job is queued: the first job to end may already send an event
        configure(client, run_id, notify_url, notify_interval)
    report = start_run(create_app(settings), storage, client, shards, run_id=run_id,
                       root=runs_root(settings, S3Uri.parse(entries[0].output).bucket),
                       info={"output_prefix": output_prefix, "force": force, "skip_invalid": skip_invalid,
                             "refused_lines": refused, "overwrite": overwrite},
                       manifests={shard.name: Path(shard.path).read_bytes() for shard in shards if shard.path},
                       budget_credits=budget, force=force, overwrite=overwrite, priority=priority)
    console.print(f"run {run_id}: {report.jobs} jobs, {report.enqueued} enqueued, {report.skipped} already done")
    tell(client, run_id, "run.started", {"enqueued": report.enqueued, "skipped": report.skipped}, wait=True)
    click.echo(run_id)
    if wait:
        wait_and_exit(client, run_id, report.jobs, console=console, timeout_s=timeout)
