"""``sts-pipeline reconcile``: what is done, what failed and why, what never ran, from S3 alone (never Redis)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli import main

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.manifest.load import Shard
    from pipeline.storage.s3 import Storage


class ReconcileFailed(click.ClickException):
    """The report could not be made at all (exit 2; exit 1 means it was made and not everything succeeded)."""

    exit_code = 2


@dataclass
class Source:
    """The shards to reconcile and where they came from."""

    settings: Settings
    storage: Storage
    shards: list[Shard]
    run_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def load_source(manifests: tuple[Path, ...], run_id: str | None, runs_uri: str | None,
                output_prefix: str | None) -> Source:
    """The manifest files given, or the copies a run stored in S3 (``--run``)."""
    from pipeline.config import get_settings
    from pipeline.errors import PipelineError
    from pipeline.manifest.load import ManifestLimits, load_manifests
    from pipeline.report.reconcile import shards_of_run
    from pipeline.run.stored import load_run, runs_root
    from pipeline.storage.s3 import Storage

    if bool(manifests) == bool(run_id):
        raise click.UsageError("give either MANIFEST files or --run RUN_ID (one of the two)")
    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    limits = ManifestLimits.from_settings(settings)
    try:
        storage = Storage.from_settings(settings)
        if run_id:
            stored = load_run(storage, runs_root(settings), run_id)
            shards = shards_of_run(stored, output_prefix=output_prefix, limits=limits)
            return Source(settings, storage, shards, run_id, stored.info)
        shards = load_manifests(list(manifests), output_prefix=output_prefix, limits=limits)
    except PipelineError as error:
        raise ReconcileFailed(error.message) from None
    return Source(settings, storage, shards, None, {"output_prefix": output_prefix})


def source_options(command: Any) -> Any:
    """The options that say what to reconcile, shared by ``reconcile`` and ``retry``."""
    for option in reversed([
        click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option("--run", "run_id", default=None, metavar="RUN_ID",
                     help="A submitted run, read from the manifests it stored in S3."),
        click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX",
                     help="Where runs are stored (default: STS_RUNS_URI)."),
        click.option("--output-prefix", default=None, metavar="s3://BUCKET/PREFIX",
                     help="The prefix the run was submitted with (default for --run: the run's own)."),
    ]):
        command = option(command)
    return command


@main.command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write one CSV row per manifest line to this file.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report to this file.")
@click.option("--retry-manifest", "retry_target", default=None, metavar="DIR_OR_FILE",
              help="Write the lines to re-run (failed, deferred, orphaned, missing) as manifests: into a directory "
                   "(existing, or ending in /) one file per shard, else all into one .jsonl or .csv file.")
@click.option("--include-rejected", is_flag=True, help="Also put rejected (422) lines in the retry manifest.")
def reconcile(manifests: tuple[Path, ...], run_id: str | None, runs_uri: str | None, output_prefix: str | None,
              as_json: bool, csv_path: Path | None, html_path: Path | None, retry_target: str | None,
              include_rejected: bool) -> None:
    """Report every line of MANIFESTs (or of --run RUN_ID): succeeded, failed by reason, rejected, deferred,
    orphaned, missing, invalid; quality flags, cost and throughput.

    Reads S3 only, so it works after Redis is gone. Exits 0 only when every line succeeded, 1 when some did not,
    2 when the report could not be made.
    """
    from rich.console import Console

    from pipeline.errors import PipelineError
    from pipeline.report.reconcile import reconcile as reconcile_run
    from pipeline.report.reconcile import write_retry_manifests
    from pipeline.report.text import print_report, report_dict, write_csv
    from pipeline.report.html import render_html

    notes = Console(stderr=True)
    source = load_source(manifests, run_id, runs_uri, output_prefix)
    try:
        report = reconcile_run(source.storage, source.shards, run_id=source.run_id)
        to_retry = report.to_retry(include_rejected=include_rejected)
        written = write_retry_manifests(retry_target, to_retry) if retry_target else []
    except PipelineError as error:
        raise ReconcileFailed(error.message) from None
    if csv_path:
        write_csv(report, csv_path)
        notes.print(f"wrote {csv_path}", markup=False, highlight=False)
    if html_path:
        html_path.write_text(render_html(report), encoding="utf-8")
        notes.print(f"wrote {html_path}", markup=False, highlight=False)
    if retry_target:
        notes.print(f"retry manifest: {len(to_retry)} line(s) in {', '.join(map(str, written))}" if written
                    else "retry manifest: nothing to re-run, no file written", markup=False, highlight=False)
    if as_json:
        click.echo(json.dumps(report_dict(report), indent=2, ensure_ascii=False))
    else:
        print_report(report, Console())
    sys.exit(0 if report.all_succeeded else 1)
