"""``sts-pipeline manifest from-feed FEED``: a show's back catalog into S3 and a manifest, in one command.

Each episode is downloaded once (a second run fetches nothing that is already stored), and every item that cannot
be taken (no audio, a ``file:`` or private URL, over the size bound) is reported on stderr while the rest go on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipeline.cli._base import main
from pipeline.s3uri import S3Uri


@main.group()
def manifest() -> None:
    """Write manifests from other sources (a podcast feed)."""


def _voice_settings(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--voice-settings") from None
    if not isinstance(value, dict):
        raise click.BadParameter('must be a JSON object such as {"stability": 0.5}', param_hint="--voice-settings")
    return value


def _prefix(text: str, option: str) -> S3Uri:
    try:
        checked = S3Uri.parse(text.rstrip("/") + "/x", require_key=True)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None
    return S3Uri(checked.bucket, checked.key[:-2])


def _master(text: str | None) -> Any:
    """The line's ``master`` value, checked as a manifest line's would be (before anything is downloaded)."""
    from pydantic import TypeAdapter, ValidationError

    from pipeline.manifest.job import MasterTarget

    if text is None:
        return None
    try:
        value = text if text == "podcast" else json.loads(text)
        if value != "podcast":
            TypeAdapter(MasterTarget).validate_python(value)
    except (json.JSONDecodeError, ValidationError):
        raise click.BadParameter('"podcast" or a JSON object such as {"lufs": -16, "true_peak_db": -1} '
                                 "(lufs -36 to -6, true_peak_db -9 to 0)", param_hint="--master") from None
    return value


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("must be a date such as 2024-01-31", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@manifest.command("from-feed")
@click.argument("feed")
@click.option("--voice", "voice_id", required=True, help="The voice every episode is converted to.")
@click.option("--model", "model_id", default=None, help="The model (default: the pipeline's default).")
@click.option("--voice-settings", default=None, metavar="JSON", help='e.g. {"stability": 0.5, "speed": 1.0}')
@click.option("--input-prefix", required=True, metavar="s3://BUCKET/PREFIX", help="Where the episodes are stored.")
@click.option("--output-prefix", required=True, metavar="s3://BUCKET/PREFIX", help="Where converted episodes go.")
@click.option("--output-format", default="mp3_44100_128", show_default=True, help="The converted episodes' format.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many episodes.")
@click.option("--since", default=None, metavar="DATE", help="Only episodes published on or after DATE.")
@click.option("-o", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="Directory the manifest is written to (feed.jsonl).")
@click.option("--max-pages", type=click.IntRange(min=1, max=1000), default=50, show_default=True,
              help="Pages of a paged feed (rel=\"next\") read at most.")
@click.option("--master", "master", default=None, metavar='podcast|JSON',
              help='Loudness mastering for every line: "podcast" or {"lufs": -16, "true_peak_db": -1}.')
@click.option("--allow-loopback", is_flag=True, help="Fetch from this machine's addresses too (a feed served locally).")
@click.option("--allow-private", is_flag=True, help="Fetch from private network addresses too (an intranet feed).")
def from_feed(feed: str, voice_id: str, model_id: str | None, voice_settings: str | None, input_prefix: str,
              output_prefix: str, output_format: str, limit: int | None, since: str | None, out_dir: Path,
              max_pages: int, master: str | None, allow_loopback: bool, allow_private: bool) -> None:
    """Read FEED (an http(s) URL or a file), store its episodes in S3, write a manifest of them (feed.jsonl).

    Exits 1 if any item was skipped, else 0.
    """
    from pipeline.config import get_settings
    from pipeline.feed.catalog import build_catalog
    from pipeline.feed.fetch import FetchLimits
    from pipeline.feed.manifest import LineOptions, select, write_manifest
    from pipeline.feed.net import AddressPolicy
    from pipeline.feed.read import read_feed
    from pipeline.formats import DEFAULT_MODEL_ID
    from pipeline.storage.s3 import Storage

    settings_json, when, mastering = _voice_settings(voice_settings), _since(since), _master(master)
    inputs, _outputs = _prefix(input_prefix, "--input-prefix"), _prefix(output_prefix, "--output-prefix")
    settings = get_settings()
    limits = FetchLimits(max_bytes=settings.max_input_bytes,
                         policy=AddressPolicy(allow_loopback=allow_loopback, allow_private=allow_private))
    parsed = read_feed(feed, policy=limits.policy, max_pages=max_pages)
    for problem in parsed.problems:
        click.echo(f"feed: {problem}", err=True)
    options = LineOptions(voice_id=voice_id, model_id=model_id or DEFAULT_MODEL_ID,
                          output_prefix=output_prefix.rstrip("/"), output_format=output_format,
                          voice_settings=settings_json, feed_url=feed, master=mastering)
    catalog = build_catalog(Storage.from_settings(settings), select(parsed.episodes, since=when, limit=limit),
                            inputs, options, limits=limits, progress=lambda line: click.echo(line, err=True))
    for line in catalog.skipped:
        click.echo(f"skipped: {line}", err=True)
    path = write_manifest(catalog.lines, out_dir / "feed.jsonl")
    kept = len(catalog.lines)
    click.echo(f"{kept} episodes in {path} ({catalog.downloaded} downloaded, {kept - catalog.downloaded} already in "
               f"S3, {len(catalog.skipped)} skipped)")
    raise SystemExit(1 if catalog.skipped else 0)


@manifest.command("from-prefix")
@click.argument("source", metavar="s3://BUCKET/PREFIX/")
@click.option("--voice", "voices", multiple=True, required=True, help="A target voice (repeat for several).")
@click.option("--seed", "seeds", type=click.IntRange(min=0), multiple=True, help="A seed (repeat for several).")
@click.option("--model", "model_id", default=None, help="The model (default: the pipeline's default).")
@click.option("--output-format", default="mp3_44100_128", show_default=True, help="The converted clips' format.")
@click.option("--output-prefix", required=True, metavar="s3://BUCKET/PREFIX",
              help="Outputs go to PREFIX/<voice>/<key under SOURCE>[.<seed>].<ext>.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only keys (under SOURCE) matching a GLOB.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out keys (under SOURCE) matching a GLOB.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Lines per shard.")
@click.option("-o", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("shards"),
              show_default=True, help="Directory the shards are written to (prefix-00000.jsonl, ...).")
def from_prefix(source: str, voices: tuple[str, ...], seeds: tuple[int, ...], model_id: str | None,
                output_format: str, output_prefix: str, include: tuple[str, ...], exclude: tuple[str, ...],
                shard_size: int, out_dir: Path) -> None:
    """List SOURCE and write one fan-out line per audio clip (every --voice × --seed) into shards under -o.

    The same listing gives the same shards. Exits 1 if an audio key could not be taken, else 0.
    """
    from pipeline.config import get_settings
    from pipeline.dataset.prefix import PrefixOptions, write_prefix_shards
    from pipeline.formats import DEFAULT_MODEL_ID
    from pipeline.storage.s3 import Storage

    options = PrefixOptions(voices=voices, seeds=seeds, model_id=model_id or DEFAULT_MODEL_ID,
                            output_format=output_format, output_prefix=str(_prefix(output_prefix, "--output-prefix")),
                            include=include, exclude=exclude, shard_size=shard_size)
    storage = Storage.from_settings(get_settings())
    result = write_prefix_shards(storage, _prefix(source, "SOURCE"), options, out_dir)
    for line in result.unusable:
        click.echo(f"skipped: {line}", err=True)
    for path in result.removed:
        click.echo(f"removed stale shard {path}", err=True)
    click.echo(f"{result.lines} clips, {result.jobs} jobs in {len(result.shards)} shard(s) under {out_dir} "
               f"({result.not_audio} not audio, {result.filtered} filtered out, {len(result.unusable)} skipped)")
    raise SystemExit(1 if result.unusable else 0)
