"""``sts-pipeline validate``: check manifests without spending anything (no network, no API calls)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli._base import main
from pipeline.config import get_settings
from pipeline.errors import ManifestError
from pipeline.manifest.load import ManifestLimits, check_output_prefix, load_manifests


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--output-prefix", default=None, metavar="s3://BUCKET/PREFIX",
              help="Where outputs go for lines that do not name one: <prefix>/<job id>.<extension>.")
def validate(files: tuple[Path, ...], output_prefix: str | None) -> None:
    """Check manifest FILEs (JSONL or CSV): print every problem as FILE:LINE: field: message, then a summary.

    Exits 1 if any problem was found, else 0.
    """
    limits = ManifestLimits.from_settings(get_settings())
    if output_prefix is not None:
        try:
            check_output_prefix(output_prefix, limits)
        except ManifestError as exc:
            raise click.BadParameter(exc.message, param_hint="--output-prefix") from None
    try:
        shards = load_manifests(files, output_prefix=output_prefix, limits=limits)
    except ManifestError as exc:
        raise click.ClickException(exc.message) from None
    problems = [problem for shard in shards for problem in shard.problems]
    for problem in problems:
        click.echo(str(problem))
    lines = sum(shard.line_count for shard in shards)
    valid = sum(len(shard.entries) for shard in shards)
    click.echo(f"{_plural(lines, 'line')}, {valid} valid, {_plural(len(problems), 'problem')} "
               f"in {_plural(len(shards), 'file')}")
    raise SystemExit(1 if problems else 0)
