"""``sts-pipeline retry``: reconcile, then re-enqueue only what did not succeed, as a new run of the same jobs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli._base import main

if TYPE_CHECKING:
    from rich.console import Console

    from pipeline.manifest.load import Shard
from pipeline.cli._control import run_cancelled
from pipeline.cli._source import load_source, source_options


@main.command()
@source_options
@click.option("--include-rejected", is_flag=True, help="Also re-run rejected (422) jobs (after fixing their cause).")
@click.option("--include-cancelled", is_flag=True, help="Also re-run the jobs of a cancelled run that never ran.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default="high", show_default=True,
              help="The retry's priority: by default its few jobs overtake queued bulk work.")
@click.option("--shard", "only_shards", multiple=True, metavar="NAME", help="Only this shard (repeatable).")
@click.option("--budget", type=float, default=None, help="Credits the retry may spend; jobs beyond it are deferred.")
@click.option("--overwrite", is_flag=True, help="Let every job replace an object at its output that this pipeline "
                                               "did not write (jobs that failed output_exists).")
@click.option("--wait", is_flag=True, help="Show progress until every job is done; exit 1 if any did not succeed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@click.option("--even-if-running", is_flag=True,
              help="Retry even though Redis says the run still has queued or running jobs (they may run twice).")
def retry(manifests: tuple[Path, ...], run_id: str | None, runs_uri: str | None, output_prefix: str | None,
          include_rejected: bool, include_cancelled: bool, priority: str, only_shards: tuple[str, ...],
          budget: float | None, overwrite: bool, wait: bool, timeout: float | None, even_if_running: bool) -> None:
    """Re-enqueue the failed, deferred, orphaned and missing jobs of MANIFESTs (or of --run RUN_ID); print the new
    run id.

    The jobs keep their ids, so outputs land where the first run wanted them. The retry's manifests are stored as a
    run of their own, so ``reconcile --run NEW_ID`` works on it too.
    """
    import redis
    from rich.console import Console

    from pipeline.cli._preflight import gate_run
    from pipeline.cli._wait import wait_and_exit
    from pipeline.errors import BrokerError
    from pipeline.manifest.load import ManifestLimits
    from pipeline.run.broker import check_broker
    from pipeline.run.retry import check_not_running, plan_retry
    from pipeline.run.stored import new_run_id, runs_root
    from pipeline.run.submit import start_run
    from pipeline.s3uri import S3Uri
    from workers.app import create_app

    console = Console(stderr=True)
    source = load_source(manifests, run_id, runs_uri, output_prefix)
    _check_shard_names(source.shards, only_shards)
    settings, storage = source.settings, source.storage
    check_broker(settings)
    client = redis.Redis.from_url(settings.limiter_redis_url)
    prefix = output_prefix if output_prefix is not None else source.info.get("output_prefix")
    try:
        if source.run_id and not even_if_running:
            check_not_running(client, source.run_id)
        plan = plan_retry(storage, source.shards, run_id=source.run_id, output_prefix=prefix, only_shards=only_shards,
                          limits=ManifestLimits.from_settings(settings), include_rejected=include_rejected,
                          cancelled=run_cancelled(source), include_cancelled=include_cancelled)
        _say_what_is_left_out(console, plan.rejected_left_out)
        if not plan.chosen:
            console.print("nothing to retry: no failed, deferred, orphaned or missing jobs", markup=False)
            return
        shards, budget, refused = gate_run(settings, storage, plan.shards, console=console, skip_invalid=True,
                                           allow_partial=True, budget=budget)
        new_id = new_run_id()
        origin = {"retry_of": source.run_id} if source.run_id else {}
        entries = [entry for shard in shards for entry in shard.entries]
        submitted = start_run(create_app(settings), storage, client, shards, run_id=new_id,
                              root=runs_root(settings, S3Uri.parse(entries[0].output).bucket),
                              info={"output_prefix": prefix, "include_rejected": include_rejected,
                                    "refused_lines": refused, **origin},
                              manifests=plan.manifests, budget_credits=budget, entries=entries,
                              overwrite=overwrite, priority=priority)
    except redis.RedisError as error:
        raise BrokerError(f"Redis did not answer ({error}); the retry needs it to enqueue: check STS_BROKER_URL "
                          "and STS_LIMITER_URL") from None
    by_state = Counter(r.state.value for r in plan.chosen)
    console.print(f"retry run {new_id}: {submitted.enqueued} job(s) enqueued ({_listing(by_state)}), "
                  f"{submitted.skipped} already done", markup=False, highlight=False)
    click.echo(new_id)
    if wait:
        wait_and_exit(client, new_id, submitted.jobs, console=console, timeout_s=timeout, show_credits=False)


def _check_shard_names(shards: list[Shard], only_shards: tuple[str, ...]) -> None:
    names = {shard.name for shard in shards}
    unknown = sorted(set(only_shards) - names)
    if unknown:
        raise click.BadParameter(f"no shard named {', '.join(unknown)}; the shards are: {', '.join(sorted(names))}",
                                 param_hint="--shard")


def _listing(by_state: Counter[str]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))


def _say_what_is_left_out(console: Console, rejected: int) -> None:
    if rejected:
        console.print(f"{rejected} rejected (422) job(s) left out: fix them, then use --include-rejected", markup=False,
                      highlight=False)
