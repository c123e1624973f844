"""The manifest lines for a feed's episodes: one per stored episode, its GUID as ``id``, its facts as ``metadata``.

Each line is validated as a ``Job`` before it is written, so a manifest from a feed is one ``validate`` accepts.
``copy_tags`` is on: the converted episode keeps the source's title, artwork and chapters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.feed.fetch import Fetched
from pipeline.feed.read import Episode
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job

MAX_ID_CHARS = 200  # Job.id's bound; a longer GUID is shortened with its hash


@dataclass(frozen=True)
class LineOptions:
    voice_id: str
    model_id: str
    output_prefix: str  # s3://bucket/prefix of the converted episodes
    output_format: str
    voice_settings: Mapping[str, Any] | None = None
    feed_url: str = ""
    master: str | Mapping[str, Any] | None = None  # as a manifest line spells it


def manifest_id(guid: str) -> str:
    """The line's ``id``: the GUID itself, or when it is over the bound, its head and a hash of the whole."""
    if len(guid) <= MAX_ID_CHARS:
        return guid
    return f"{guid[:MAX_ID_CHARS - 26]}…{hashlib.sha256(guid.encode()).hexdigest()[:24]}"


def episode_metadata(episode: Episode, feed_url: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"title": episode.title, "guid": episode.guid, "feed": feed_url}
    if episode.published:
        meta["published"] = episode.published.isoformat()
    if episode.episode is not None:
        meta["episode"] = episode.episode
    if episode.season is not None:
        meta["season"] = episode.season
    if episode.enclosure is not None:
        meta["enclosure"] = episode.enclosure.url
    return meta


def line_for(fetched: Fetched, options: LineOptions) -> dict[str, Any]:
    """One manifest line, checked by ``Job``'s own validation (a ``ValidationError`` if the options are wrong)."""
    stem = PurePosixPath(fetched.uri.key).stem
    extension = OUTPUT_FORMATS[options.output_format].extension
    line: dict[str, Any] = {
        "id": manifest_id(fetched.episode.guid),
        "input": str(fetched.uri),
        "output": f"{options.output_prefix.rstrip('/')}/{stem}.{extension}",
        "voice_id": options.voice_id, "model_id": options.model_id, "output_format": options.output_format,
        "copy_tags": True,
        "metadata": episode_metadata(fetched.episode, options.feed_url),
    }
    if options.voice_settings:
        line["voice_settings"] = dict(options.voice_settings)
    if options.master:
        line["master"] = options.master if isinstance(options.master, str) else dict(options.master)
    Job.model_validate(json.loads(json.dumps(line)))
    return line


def select(episodes: Iterable[Episode], *, since: datetime | None, limit: int | None) -> list[Episode]:
    """The episodes published on or after ``since`` (undated ones are kept), at most ``limit``, in feed order."""
    chosen = [e for e in episodes if since is None or e.published is None or e.published >= since]
    return chosen[:limit] if limit is not None else chosen


def write_manifest(lines: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
    return path
