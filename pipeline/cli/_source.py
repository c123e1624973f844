"""What ``reconcile`` and ``retry`` read: manifest files given on the command line, or the copies a run stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.manifest.load import Shard
    from pipeline.storage.s3 import Storage


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
    from pipeline.manifest.load import ManifestLimits, load_manifests
    from pipeline.run.stored import load_run, runs_root, shards_of_run
    from pipeline.storage.s3 import Storage

    if bool(manifests) == bool(run_id):
        raise click.UsageError("give either MANIFEST files or --run RUN_ID (one of the two)")
    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    limits = ManifestLimits.from_settings(settings)
    storage = Storage.from_settings(settings)
    if run_id:
        stored = load_run(storage, runs_root(settings), run_id)
        shards = shards_of_run(stored, output_prefix=output_prefix, limits=limits)
        return Source(settings, storage, shards, run_id, stored.info)
    shards = load_manifests(list(manifests), output_prefix=output_prefix, limits=limits)
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
