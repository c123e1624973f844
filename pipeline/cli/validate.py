"""``sts-pipeline validate``: check manifests without spending anything (no network unless ``--remote``)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli._base import main
from pipeline.config import get_settings
from pipeline.errors import ManifestError
from pipeline.manifest.load import ManifestLimits, Shard, check_output_prefix, load_manifests


def _remote_problems(shards: list[Shard]) -> int:
    """Print what the account refuses (FILE:LINE, and a credit shortfall); return how many problems that was."""
    from rich.console import Console

    from pipeline.cli._preflight import check_account
    from pipeline.run.plan import make_plan
    from pipeline.storage.s3 import Storage

    settings = get_settings()
    plan = make_plan(Storage.from_settings(settings), shards, settings, concurrency=1)
    result = check_account(settings, shards, plan, console=Console(highlight=False))
    if result is None:
        return 1  # asked to check the account and could not: not a clean bill
    return len(result.problems) + (1 if result.credit_problem() else 0)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--output-prefix", default=None, metavar="s3://BUCKET/PREFIX",
              help="Where outputs go for lines that do not name one: <prefix>/<job id>.<extension>.")
@click.option("--remote", is_flag=True,
              help="Also check against the account (voices, models, the plan's formats, credits left) and the "
                   "inputs in S3 (their length, for the credit estimate). Spends nothing.")
def validate(files: tuple[Path, ...], output_prefix: str | None, remote: bool) -> None:
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
    count = len(problems) + (_remote_problems(shards) if remote else 0)
    lines = sum(shard.line_count for shard in shards)
    valid = sum(len(shard.entries) for shard in shards)
    click.echo(f"{_plural(lines, 'line')}, {valid} valid, {_plural(count, 'problem')} "
               f"in {_plural(len(shards), 'file')}")
    raise SystemExit(1 if count else 0)
