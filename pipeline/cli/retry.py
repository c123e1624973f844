"""``sts-pipeline retry``: reconcile, then re-enqueue only what did not succeed, as a new run of the same jobs."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from pipeline.cli import main
from pipeline.cli.reconcile import ReconcileFailed, load_source, source_options

_ACTIVE = ("queued", "running")


@main.command()
@source_options
@click.option("--include-rejected", is_flag=True, help="Also re-run rejected (422) jobs (after fixing their cause).")
@click.option("--shard", "only_shards", multiple=True, metavar="NAME", help="Only this shard (repeatable).")
@click.option("--budget", type=float, default=None, help="Credits the retry may spend; jobs beyond it are deferred.")
@click.option("--wait", is_flag=True, help="Show progress until every job is done; exit 1 if any did not succeed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@click.option("--even-if-running", is_flag=True,
              help="Retry even though Redis says the run still has queued or running jobs (they may run twice).")
def retry(manifests: tuple[Path, ...], run_id: str | None, runs_uri: str | None, output_prefix: str | None,
          include_rejected: bool, only_shards: tuple[str, ...], budget: float | None, wait: bool,
          timeout: float | None, even_if_running: bool) -> None:
    """Re-enqueue the failed, deferred, orphaned and missing jobs of MANIFESTs (or of --run RUN_ID); print the new
    run id.

    The jobs keep their ids, so outputs land where the first run wanted them. The retry's manifests are stored as a
    run of their own, so ``reconcile --run NEW_ID`` works on it too.
    """
    import redis
    from rich.console import Console

    from pipeline.errors import PipelineError
    from pipeline.run.submit import enqueue
    from pipeline.manifest.load import ManifestLimits, parse_manifest
    from pipeline.run.progress import counts_table, wait_for_run
    from pipeline.report.reconcile import Outcome, reconcile, retry_manifest_bytes
    from pipeline.run.stored import new_run_id, runs_root, save_run
    from pipeline.run.state import RunState
    from pipeline.s3uri import S3Uri
    from workers.app import create_app

    console = Console(stderr=True)
    source = load_source(manifests, run_id, runs_uri, output_prefix)
    names = {shard.name for shard in source.shards}
    unknown = sorted(set(only_shards) - names)
    if unknown:
        raise click.BadParameter(f"no shard named {', '.join(unknown)}; the shards are: {', '.join(sorted(names))}",
                                 param_hint="--shard")
    settings, storage = source.settings, source.storage
    client = redis.Redis.from_url(settings.limiter_redis_url)
    try:
        if source.run_id and not even_if_running:
            live = RunState(client, source.run_id).counts()
            active = sum(live.get(state, 0) for state in _ACTIVE)
            if active:
                raise ReconcileFailed(
                    f"run {source.run_id} still has {active} queued or running job(s) in Redis; retrying now would "
                    f"run them twice. Wait (sts-pipeline status {source.run_id} --watch) or pass --even-if-running")
        report = reconcile(storage, source.shards, fetch_records=False, run_id=source.run_id)
        chosen = report.to_retry(include_rejected=include_rejected, shards=only_shards)
        left_out = [r for r in report.in_state(Outcome.REJECTED) if not include_rejected
                    and (not only_shards or r.entry.shard in only_shards)]
        if left_out:
            console.print(f"{len(left_out)} rejected (422) job(s) left out: fix them, then use --include-rejected",
                          markup=False, highlight=False)
        if not chosen:
            console.print("nothing to retry: no failed, deferred, orphaned or missing jobs", markup=False)
            return
        prefix = output_prefix if output_prefix is not None else source.info.get("output_prefix")
        retry_manifests = retry_manifest_bytes(chosen)
        limits = ManifestLimits.from_settings(settings)
        shards = [parse_manifest(data, name, output_prefix=prefix, limits=limits)
                  for name, data in sorted(retry_manifests.items())]
        entries = [entry for shard in shards for entry in shard.entries]
        if sorted(e.job_id for e in entries) != sorted(r.entry.job_id for r in chosen):
            raise ReconcileFailed("the retry manifests did not read back to the same jobs (their outputs would land "
                                  "elsewhere); nothing was enqueued. Please report this with the manifest lines.")
        new_id = new_run_id()
        root = runs_root(settings, S3Uri.parse(entries[0].output).bucket)
        origin = {"retry_of": source.run_id} if source.run_id else {}
        save_run(storage, root, new_id, {"output_prefix": prefix, "budget": budget, "runs_root": str(root),
                                         "include_rejected": include_rejected, **origin}, retry_manifests)
        submitted = enqueue(create_app(settings), storage, client, shards, run_id=new_id, budget_credits=budget,
                            info={"runs_root": str(root), **origin}, entries=entries)
    except PipelineError as error:
        raise ReconcileFailed(error.message) from None
    except redis.RedisError as error:
        raise ReconcileFailed(f"Redis did not answer ({error}); the retry needs it to enqueue: check STS_BROKER_URL "
                              "and STS_LIMITER_URL") from None
    by_state = Counter(r.state.value for r in chosen)
    console.print(f"retry run {new_id}: {submitted.enqueued} job(s) enqueued "
                  f"({', '.join(f'{n} {state}' for state, n in sorted(by_state.items()))}), "
                  f"{submitted.skipped} already done", markup=False, highlight=False)
    click.echo(new_id)
    if not wait:
        return
    counts = wait_for_run(client, new_id, submitted.jobs, console=console, timeout_s=timeout)
    console.print(counts_table(f"run {new_id}", counts))
    bad = sum(counts.get(state, 0) for state in ("failed", "rejected", "deferred", "queued", "running"))
    sys.exit(1 if bad else 0)
