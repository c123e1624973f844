"""``sts-pipeline feed --run RUN --source FEED --base-url URL -o feed.xml``: publish a run's re-voiced episodes.

Read from S3 alone, like ``reconcile``: the run's stored manifests, each output's provenance and its object's size.
Episodes that did not succeed are left out and listed on stderr (exit 1), so a partial feed is never a surprise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.cli._base import main


@main.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID", help="The run whose outputs are published.")
@click.option("--source", "source", required=True, metavar="FEED",
              help="The show's feed (URL or file): channel metadata and each episode's text come from it.")
@click.option("--base-url", required=True, metavar="https://…/",
              help="The public URL of the output bucket's root: an output s3://B/K is published as BASE_URL/K.")
@click.option("-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The feed written.")
@click.option("--alternate", is_flag=True,
              help="Write a copy of the source feed where each converted episode gains a "
                   "podcast:alternateEnclosure, instead of a new feed.")
@click.option("--edition", default=None, metavar="TEXT",
              help='How the new voice is named in titles (default: "<voice id> voice edition").')
@click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX", help="Where runs are stored.")
@click.option("--allow-loopback", is_flag=True, help="The source feed may be served from this machine.")
@click.option("--allow-private", is_flag=True, help="The source feed may be on a private network address.")
def feed(run_id: str, source: str, base_url: str, out: Path, alternate: bool, edition: str | None,
         runs_uri: str | None, allow_loopback: bool, allow_private: bool) -> None:
    """Write a podcast feed of RUN's converted episodes (or, with --alternate, the source feed with alternates).

    Exits 0 when every episode of the run is in it, 1 when some were left out.
    """
    from pipeline.cli._source import load_source
    from pipeline.feed.net import AddressPolicy
    from pipeline.feed.outputs import converted_episodes
    from pipeline.feed.read import read_pages
    from pipeline.feed.write import alternate_feed, not_in_source, revoiced_feed
    from pipeline.text import printable

    if not base_url.startswith(("https://", "http://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--base-url")
    loaded = load_source((), run_id, runs_uri, None)
    episodes, left_out = converted_episodes(loaded.storage, loaded.shards, base_url, run_id=run_id)
    voices = sorted({e.job.voice_id for shard in loaded.shards for e in shard.entries})
    name = edition or f"{', '.join(voices) or 'new'} voice edition"
    pages, _truncated = read_pages(source, policy=AddressPolicy(allow_loopback=allow_loopback,
                                                                allow_private=allow_private))
    body = alternate_feed(pages, episodes, title=name) if alternate else revoiced_feed(pages, episodes, edition=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    for line in left_out:
        click.echo(f"left out: {line}", err=True)
    strays = not_in_source(pages, episodes)
    for stray in strays:
        click.echo(f"not in the source feed, so in neither feed: {printable(stray.source_guid)} ({stray.url})",
                   err=True)
    click.echo(f"wrote {out}: {len(episodes) - len(strays)} episodes, {len(left_out)} left out"
               + (f", {len(strays)} converted outputs not in the source feed" if strays else ""))
    sys.exit(1 if left_out else 0)
