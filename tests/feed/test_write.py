"""Writing feeds: hostile source text stays text, GUIDs are new and deterministic, alternates keep the source."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import feedparser
import pytest

from pipeline.errors import FeedError
from pipeline.feed.outputs import ConvertedEpisode, new_guid, public_url
from pipeline.feed.write import alternate_feed, itunes_duration, revoiced_feed
from pipeline.s3uri import S3Uri

HOSTILE = """<?xml version="1.0"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" xmlns:x="urn:custom"><channel>
<title>Show &lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title><link>https://e.com/</link>
<x:thing>kept</x:thing>
<item><title>Ep ]]&gt; &amp; &#x1b;[31m red</title><guid>g-1</guid>
<description><![CDATA[<p onclick="evil()">Hi</p><script>bad()</script>]]></description>
<enclosure url="https://e.com/1.mp3" length="9" type="audio/mpeg"/></item>
<item><title>Not converted</title><guid>g-2</guid>
<enclosure url="https://e.com/2.mp3" length="9" type="audio/mpeg"/></item>
</channel></rss>
"""


def _episode(guid: str = "g-1") -> ConvertedEpisode:
    return ConvertedEpisode(source_guid=guid, guid=new_guid(guid, "s3://b/out/1.mp3"), url="https://cdn/out/1.mp3",
                            length=1234, mime_type="audio/mpeg", duration_s=3725.4, sha256="00" * 32)


def _pages(text: str = HOSTILE) -> list[tuple[str, bytes, object]]:
    body = text.encode()
    return [("feed.xml", body, feedparser.parse(body))]


def test_new_feed_escapes_hostile_text_and_keeps_only_converted_items() -> None:
    body = revoiced_feed(_pages(), [_episode()], edition="Bram <voice> edition")
    root = ET.fromstring(body)  # well-formed XML whatever the source held
    channel = root.find("channel")
    assert channel is not None
    assert channel.findtext("title") == "Show </title><script>alert(1)</script> (Bram <voice> edition)"
    items = channel.findall("item")
    assert len(items) == 1
    assert "\x1b" not in (items[0].findtext("title") or "")
    assert "script" not in (items[0].findtext("description") or "") and "onclick" not in body.decode()
    assert items[0].findtext("guid") == _episode().guid
    enclosure = items[0].find("enclosure")
    assert enclosure is not None and enclosure.attrib == {"url": "https://cdn/out/1.mp3", "length": "1234",
                                                          "type": "audio/mpeg"}
    assert items[0].findtext("{http://www.itunes.com/dtds/podcast-1.0.dtd}duration") == "01:02:05"


def test_alternate_feed_adds_to_the_converted_item_only() -> None:
    with pytest.raises(FeedError, match="not well-formed XML"):
        alternate_feed(_pages(), [_episode()], title="Bram")  # a character reference XML forbids
    body = alternate_feed(_pages(HOSTILE.replace("&#x1b;", "")), [_episode()], title="Bram")
    text = body.decode()
    assert "<x:thing>kept</x:thing>" in text  # the source's own namespaces keep their prefixes
    root = ET.fromstring(body)
    items = root.findall("channel/item")
    ns = "{https://podcastindex.org/namespace/1.0}"
    assert [len(item.findall(f"{ns}alternateEnclosure")) for item in items] == [1, 0]
    alternate = items[0].find(f"{ns}alternateEnclosure")
    assert alternate is not None
    source, integrity = alternate.find(f"{ns}source"), alternate.find(f"{ns}integrity")
    assert source is not None and source.get("uri") == "https://cdn/out/1.mp3"
    assert integrity is not None and integrity.get("value") == "sha256-" + "A" * 43 + "="
    enclosure = items[0].find("enclosure")
    assert enclosure is not None and enclosure.get("url") == "https://e.com/1.mp3"  # the original, untouched


def test_guids_and_urls() -> None:
    assert new_guid("a", "s3://b/k") == new_guid("a", "s3://b/k") != new_guid("a", "s3://b/j")
    assert new_guid("a", "s3://b/k").startswith("urn:uuid:")
    assert public_url("https://cdn.example.com/show/", S3Uri("b", "revoiced/ep 1.mp3")) == \
        "https://cdn.example.com/show/revoiced/ep%201.mp3"
    assert itunes_duration(None) is None and itunes_duration(59.6) == "00:01:00"


def test_entity_bombs_and_external_entities_go_nowhere() -> None:
    from pathlib import Path

    from pipeline.feed.read import read_feed, read_pages

    bomb = str(Path(__file__).with_name("entity_bomb.xml"))
    feed = read_feed(bomb)  # neither the billion laughs nor file:///etc/passwd is expanded
    assert len(feed.title) < 100 and "root:" not in feed.episodes[0].title
    pages, _ = read_pages(bomb)
    assert b"root:" not in revoiced_feed(pages, [], edition="x")
    with pytest.raises(FeedError, match="not well-formed|amplification"):
        alternate_feed(pages, [], title="x")
