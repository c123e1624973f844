"""Feeds of a run's converted episodes: a new feed (the new voice's edition), or the source with alternates.

Podcast apps ignore an enclosure URL they have seen and key episodes by GUID, so a re-voiced episode is published
as a new file with a new GUID (``revoiced_feed``), or as a ``podcast:alternateEnclosure`` of the original item
(``alternate_feed``), never by rewriting the old enclosure. The source feed is foreign text: it reaches the output
only through ``xml.etree.ElementTree``, which escapes everything, after characters XML cannot hold are dropped;
summaries come from feedparser, which strips scripts and event handlers from their HTML. Expat, under
ElementTree, resolves no external entity and stops entity-expansion bombs.
"""

from __future__ import annotations

import base64
import calendar
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from pipeline import __version__
from pipeline.errors import FeedError
from pipeline.feed.outputs import ConvertedEpisode

NS = {"itunes": "http://www.itunes.com/dtds/podcast-1.0.dtd", "podcast": "https://podcastindex.org/namespace/1.0",
      "content": "http://purl.org/rss/1.0/modules/content/", "atom": "http://www.w3.org/2005/Atom"}
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Page = tuple[str, bytes, Any]  # (where it was read, its bytes, feedparser's result), as read.read_pages gives


def _text(value: Any) -> str:
    """Foreign text as XML can hold it (ElementTree escapes markup characters itself)."""
    return _NOT_XML.sub("", str(value or ""))


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: Any) -> ET.Element:
    prefix, _, local = tag.rpartition(":")
    element = ET.SubElement(parent, f"{{{NS[prefix]}}}{local}" if prefix else tag,
                            {k: _text(v) for k, v in attrs.items() if v not in (None, "")})
    if text not in (None, ""):
        element.text = _text(text)
    return element


def itunes_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    whole = int(round(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _channel(rss: ET.Element, feed: Any, edition: str) -> ET.Element:
    channel = _sub(rss, "channel")
    title = _text(feed.get("title")) or "Podcast"
    _sub(channel, "title", f"{title} ({edition})")
    _sub(channel, "link", feed.get("link"))
    _sub(channel, "description", feed.get("subtitle") or feed.get("summary") or feed.get("description") or title)
    _sub(channel, "language", feed.get("language"))
    _sub(channel, "generator", f"sts-pipeline {__version__}")
    _sub(channel, "itunes:author", feed.get("author") or feed.get("itunes_author"))
    image = (feed.get("image") or {}).get("href")
    if image:
        _sub(channel, "itunes:image", href=image)
    if feed.get("itunes_explicit") is not None:
        _sub(channel, "itunes:explicit", "true" if feed.get("itunes_explicit") else "false")
    return channel


def _item(channel: ET.Element, entry: Any, episode: ConvertedEpisode) -> None:
    item = _sub(channel, "item")
    _sub(item, "title", entry.get("title"))
    _sub(item, "description", entry.get("summary"))
    content = entry.get("content") or []
    if content and content[0].get("value"):
        _sub(item, "content:encoded", content[0]["value"])
    _sub(item, "link", entry.get("link"))
    if entry.get("published_parsed"):
        stamp = datetime.fromtimestamp(calendar.timegm(entry["published_parsed"]), UTC)
        _sub(item, "pubDate", format_datetime(stamp, usegmt=True))
    _sub(item, "guid", episode.guid, isPermaLink="false")
    _sub(item, "enclosure", url=episode.url, length=str(episode.length), type=episode.mime_type)
    _sub(item, "itunes:duration", itunes_duration(episode.duration_s))
    for field in ("episode", "season", "episodetype"):
        _sub(item, f"itunes:{'episodeType' if field == 'episodetype' else field}", entry.get(f"itunes_{field}"))
    image = (entry.get("image") or {}).get("href")
    if image:
        _sub(item, "itunes:image", href=image)


def _entries(pages: Sequence[Page]) -> Iterable[Any]:
    for _where, _body, parsed in pages:
        yield from parsed.entries


def not_in_source(pages: Sequence[Page], episodes: Sequence[ConvertedEpisode]) -> list[ConvertedEpisode]:
    """Converted episodes whose GUID no item of the source feed has (they cannot be placed in either feed)."""
    guids = {str(entry.get("id") or "").strip() for entry in _entries(pages)}
    return [episode for episode in episodes if episode.source_guid not in guids]


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    out = io.BytesIO()
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out.getvalue() + b"\n"


def revoiced_feed(pages: Sequence[Page], episodes: Sequence[ConvertedEpisode], *, edition: str) -> bytes:
    """An RSS 2.0 feed with the source's channel, one item per converted episode, in the source's order."""
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    by_guid = {episode.source_guid: episode for episode in episodes}
    rss = ET.Element("rss", {"version": "2.0"})
    channel = _channel(rss, pages[0][2].feed, edition)
    for entry in _entries(pages):
        episode = by_guid.get(str(entry.get("id") or "").strip())
        if episode is not None:
            _item(channel, entry, episode)
    return _serialize(rss)


def _register_prefixes(body: bytes) -> None:
    """Keep the source's namespace prefixes when it is written again (ElementTree would say ns0, ns1, …)."""
    for _event, (prefix, uri) in ET.iterparse(io.BytesIO(body), events=("start-ns",)):
        try:
            ET.register_namespace(prefix, uri)
        except ValueError:  # a prefix ElementTree reserves (ns0, xml): it picks its own
            pass


def _alternate(item: ET.Element, episode: ConvertedEpisode, title: str) -> None:
    alternate = _sub(item, "podcast:alternateEnclosure", type=episode.mime_type, length=str(episode.length),
                     title=title, default="false")
    _sub(alternate, "podcast:source", uri=episode.url)
    if episode.sha256:
        digest = base64.b64encode(bytes.fromhex(episode.sha256)).decode()
        _sub(alternate, "podcast:integrity", type="sri", value=f"sha256-{digest}")


def _guid_of(item: ET.Element) -> str:
    guid = item.find("guid")
    if guid is None:
        guid = item.find(f"{{{NS['atom']}}}id")
    return (guid.text or "").strip() if guid is not None else ""


def _parse(where: str, body: bytes) -> ET.Element:
    try:
        _register_prefixes(body)
        return ET.fromstring(body)
    except ET.ParseError as error:
        raise FeedError(f"the source feed {where!r} is not well-formed XML ({error}); --alternate copies it as it "
                        "is, so it must be: fix the feed, or write a new feed without --alternate") from None


def alternate_feed(pages: Sequence[Page], episodes: Sequence[ConvertedEpisode], *, title: str) -> bytes:
    """The source feed (all its pages in one), each converted item with a ``podcast:alternateEnclosure``."""
    trees = [_parse(where, body) for where, body, _parsed in pages]
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    root = trees[0]
    channel = root.find("channel")
    holder = channel if channel is not None else root  # Atom: entries sit in the feed itself
    for link in list(holder.findall(f"{{{NS['atom']}}}link")):
        if link.get("rel") == "next":
            holder.remove(link)
    for later in trees[1:]:
        for item in later.iter():
            if item.tag in ("item", f"{{{NS['atom']}}}entry"):
                holder.append(item)
    by_guid = {episode.source_guid: episode for episode in episodes}
    for item in list(holder):
        if item.tag in ("item", f"{{{NS['atom']}}}entry") and _guid_of(item) in by_guid:
            _alternate(item, by_guid[_guid_of(item)], title)
    return _serialize(root)
