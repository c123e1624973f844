"""From a feed's episodes to stored inputs and manifest lines: the loop behind ``manifest from-feed``.

One bad item never stops the rest: an episode without a GUID (or with one seen before), without an audio
enclosure, pointing at a refused URL or over the size bound is reported and skipped; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import FeedError
from pipeline.feed.fetch import DEFAULT_LIMITS, FetchLimits, fetch_episode
from pipeline.feed.manifest import LineOptions, line_for
from pipeline.feed.read import Episode
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage
from pipeline.text import printable


@dataclass
class Catalog:
    lines: list[dict[str, Any]] = field(default_factory=list)
    downloaded: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per skipped item, safe to print


def build_catalog(storage: Storage, episodes: Iterable[Episode], prefix: S3Uri, options: LineOptions, *,
                  limits: FetchLimits = DEFAULT_LIMITS, progress: Callable[[str], None] = lambda line: None) -> Catalog:
    """Fetch each episode into S3 under ``prefix`` (once) and make its manifest line."""
    catalog = Catalog()
    seen: set[str] = set()
    for episode in episodes:
        if not episode.guid or episode.guid in seen:
            why = "a GUID seen before" if episode.guid else "no GUID"
            catalog.skipped.append(printable(f"episode {episode.title!r} has {why}: skipped"))
            continue
        seen.add(episode.guid)
        try:
            fetched = fetch_episode(storage, prefix, episode, limits=limits,
                                    progress=lambda line: progress(printable(line)))
        except FeedError as error:
            catalog.skipped.append(printable(error.message))
            continue
        catalog.downloaded += fetched.downloaded
        catalog.lines.append(line_for(fetched, options))
    return catalog
