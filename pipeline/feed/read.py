"""A podcast feed → its episodes: RSS 2.0 with iTunes tags, Atom, and feeds paged with ``rel="next"``.

``feedparser`` does the parsing (it copes with the many malformed feeds out there); it is only ever handed bytes,
never a URL, so every fetch goes through ``net.open_checked`` and its address policy. Pages are bounded in number
and in size, and a page seen twice ends the walk, so a hostile feed cannot keep the command busy forever.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from pipeline.errors import FeedError
from pipeline.feed import net

MAX_PAGES = 50
MAX_PAGE_BYTES = 20 * 1024 * 1024
#: what an enclosure without a usable MIME type may still be, by its file name
AUDIO_EXTENSIONS = {".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".aac": "audio/aac", ".ogg": "audio/ogg",
                    ".opus": "audio/ogg", ".oga": "audio/ogg", ".wav": "audio/wav", ".flac": "audio/flac"}


@dataclass(frozen=True)
class Enclosure:
    url: str
    mime_type: str
    length: int | None  # as the feed states it (often 0 or wrong)

    def is_audio(self) -> bool:
        """True for audio/* types, and for a missing or generic type on a file name that says audio."""
        mime = self.mime_type.lower().split(";")[0].strip()
        if mime.startswith("audio/"):
            return True
        generic = mime in ("", "application/octet-stream", "binary/octet-stream")
        return generic and PurePosixPath(urlsplit(self.url).path).suffix.lower() in AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Episode:
    guid: str
    title: str
    published: datetime | None
    enclosure: Enclosure | None
    episode: int | None = None
    season: int | None = None
    duration: str | None = None
    summary: str = ""


@dataclass
class Feed:
    source: str  # the URL or path it was read from
    title: str
    pages: int
    episodes: list[Episode] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # items that could not be read, one line each


def _number(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _enclosure(entry: Any) -> Enclosure | None:
    """The entry's first audio enclosure, else its first enclosure of any type (to be reported), else None."""
    found = [Enclosure(str(e.get("href") or e.get("url") or ""), str(e.get("type") or ""), _number(e.get("length")))
             for e in entry.get("enclosures") or []]
    found = [e for e in found if e.url]
    audio = [e for e in found if e.is_audio()]
    return (audio or found)[0] if found else None


def _episode(entry: Any) -> Episode:
    enclosure = _enclosure(entry)
    guid = str(entry.get("id") or entry.get("guid") or (enclosure.url if enclosure else "") or "")
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    published = datetime.fromtimestamp(calendar.timegm(stamp), UTC) if stamp else None
    return Episode(
        guid=guid.strip(), title=str(entry.get("title") or ""), published=published, enclosure=enclosure,
        episode=_number(entry.get("itunes_episode")), season=_number(entry.get("itunes_season")),
        duration=str(entry.get("itunes_duration")) if entry.get("itunes_duration") else None,
        summary=str(entry.get("summary") or ""),
    )


def _page_bytes(source: str, policy: net.AddressPolicy, timeout_s: float) -> bytes:
    """One page's bytes, from a local file or over http(s), never more than MAX_PAGE_BYTES."""
    if "://" not in source:
        path = Path(source)
        if not path.is_file():
            raise FeedError(f"feed {source!r} is neither an http(s) URL nor a readable file")
        if path.stat().st_size > MAX_PAGE_BYTES:
            raise FeedError(f"feed {source!r} is over {MAX_PAGE_BYTES} bytes: not a feed")
        return path.read_bytes()
    body = bytearray()
    with net.client(timeout_s=timeout_s) as http, net.open_checked(http, source, policy) as response:
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > MAX_PAGE_BYTES:
                raise FeedError(f"feed page {source!r} is over {MAX_PAGE_BYTES} bytes: not a feed")
    return bytes(body)


def _next_page(parsed: Any, base: str) -> str | None:
    for link in parsed.feed.get("links") or []:
        if link.get("rel") == "next" and link.get("href"):
            href = str(link["href"])
            if "://" in href or "://" in base:
                return urljoin(base, href)
            return str(Path(base).parent / href)  # a local feed's next page, beside it
    return None


def read_pages(source: str, *, policy: net.AddressPolicy = net.DEFAULT_POLICY, max_pages: int = MAX_PAGES,
               timeout_s: float = 30.0) -> tuple[list[tuple[str, bytes, Any]], bool]:
    """Each page of the feed as (URL or path, bytes, feedparser's result), and whether pages were left unread."""
    pages: list[tuple[str, bytes, Any]] = []
    seen: set[str] = set()
    page_url: str | None = source
    while page_url and page_url not in seen and len(seen) < max_pages:
        seen.add(page_url)
        body = _page_bytes(page_url, policy, timeout_s)
        parsed = feedparser.parse(body)
        if not parsed.entries and not parsed.feed and parsed.get("bozo"):
            raise FeedError(f"{page_url!r} is not a feed: {parsed.get('bozo_exception')}")
        pages.append((page_url, body, parsed))
        page_url = _next_page(parsed, page_url)
    return pages, bool(page_url and page_url not in seen)


def read_feed(source: str, *, policy: net.AddressPolicy = net.DEFAULT_POLICY, max_pages: int = MAX_PAGES,
              timeout_s: float = 30.0) -> Feed:
    """Every episode of the feed at ``source`` (URL or file), following ``rel="next"`` up to ``max_pages`` pages."""
    pages, truncated = read_pages(source, policy=policy, max_pages=max_pages, timeout_s=timeout_s)
    feed = Feed(source=source, title=str(pages[0][2].feed.get("title") or ""), pages=len(pages))
    for _url, _body, parsed in pages:
        feed.episodes.extend(_episode(entry) for entry in parsed.entries)
    if truncated:
        feed.problems.append(f"stopped after {max_pages} pages: later pages were not read")
    return feed
