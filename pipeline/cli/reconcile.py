"""``sts-pipeline reconcile``: what is done, what failed and why, what never ran, from S3 alone (never Redis)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli._base import main
from pipeline.cli._source import load_source, source_options

if TYPE_CHECKING:
    from rich.console import Console

    from pipeline.cli._source import Source
    from pipeline.report.reconcile import RunReport


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
@click.option("--results", "write_files", is_flag=True,
              help="With --run: also write results.jsonl and errors.jsonl to the run's S3 prefix.")
def reconcile(manifests: tuple[Path, ...], run_id: str | None, runs_uri: str | None, output_prefix: str | None,
              as_json: bool, csv_path: Path | None, html_path: Path | None, retry_target: str | None,
              include_rejected: bool, write_files: bool) -> None:
    """Report every line of MANIFESTs (or of --run RUN_ID): succeeded, failed by reason, rejected, deferred,
    orphaned, missing, invalid; quality flags, cost and throughput.

    Reads S3 only, so it works after Redis is gone. Exits 0 only when every line succeeded, 1 when some did not,
    2 when the report could not be made.
    """
    from rich.console import Console

    from pipeline.cli._control import run_cancelled
    from pipeline.report.html import render_html
    from pipeline.report.reconcile import reconcile as reconcile_run
    from pipeline.report.text import print_report, report_dict, write_csv
    from pipeline.run.retry import write_retry_manifests

    notes = Console(stderr=True)
    source = load_source(manifests, run_id, runs_uri, output_prefix)
    report = reconcile_run(source.storage, source.shards, run_id=source.run_id, cancelled=run_cancelled(source))
    if write_files:
        _write_result_files(source, report, notes)
    to_retry = report.to_retry(include_rejected=include_rejected)
    written = write_retry_manifests(retry_target, to_retry) if retry_target else []
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


def _write_result_files(source: Source, report: RunReport, notes: Console) -> None:
    from pipeline.report.results import write_results
    from pipeline.run.stored import run_prefix, runs_root

    if not source.run_id:
        raise click.UsageError("--results needs --run RUN_ID: the files go to the run's S3 prefix")
    written = write_results(source.storage, run_prefix(runs_root(source.settings), source.run_id), report)
    notes.print(f"wrote {', '.join(map(str, written))}", markup=False, highlight=False)
