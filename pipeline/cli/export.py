"""``sts-pipeline export``: a run's succeeded jobs as a dataset (Hugging Face Parquet, WebDataset, NeMo), from S3."""

from __future__ import annotations

import shlex
import sys

import click

from pipeline.cli._base import main


@main.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID", help="The run to export (its stored manifests).")
@click.option("--format", "fmt", type=click.Choice(["hf", "webdataset", "nemo"]), required=True,
              help="hf: Parquet with two Audio columns and a dataset card; webdataset: tar shards; nemo: a JSONL "
                   "manifest with the audio beside it.")
@click.option("--to", "target", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="Where the dataset goes.")
@click.option("--append", is_flag=True, help="Add this run to the export already there (new shards only).")
@click.option("--since", default=None, metavar="RUN_ID",
              help="Like --append, and also leave out every job of RUN_ID (exported before).")
@click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX", help="Where runs are stored (STS_RUNS_URI).")
def export(run_id: str, fmt: str, target: str, append: bool, since: str | None, runs_uri: str | None) -> None:
    """Write the succeeded jobs of RUN_ID as a dataset: each row the source and the converted audio with voice,
    model, seed, voice settings, durations, loudness, request ids, credits, SHA-256s, and the line's id and metadata.

    Streams (memory stays flat however large the run). Exits 1 when a committed job had to be left out.
    """
    from pipeline.config import get_settings
    from pipeline.dataset.export import export_run
    from pipeline.dataset.sink import open_sink
    from pipeline.run.stored import runs_root
    from pipeline.storage.s3 import Storage

    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    storage = Storage.from_settings(settings)
    sink = open_sink(target, storage)
    command = "sts-pipeline " + shlex.join(["export", *sys.argv[2:]]) if sys.argv[1:2] == ["export"] else (
        f"sts-pipeline export --run {run_id} --format {fmt} --to {target}")
    try:
        summary = export_run(storage, runs_root(settings), run_id, fmt, sink, append=append, since=since,
                             command=command)
    finally:
        sink.close()
    for problem in summary.stats.mismatched:
        click.echo(f"left out: {problem}", err=True)
    click.echo(f"{summary.rows} rows in {len(summary.files)} file(s) to {target} "
               f"({summary.stats.not_succeeded} jobs not succeeded, {summary.stats.skipped} exported before, "
               f"{len(summary.stats.mismatched)} left out); {summary.state['rows']} rows in the export")
    raise SystemExit(1 if summary.stats.mismatched else 0)
