"""Reading feeds: RSS 2.0 with iTunes tags, Atom, paged feeds; the address policy for every URL fetched."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import FeedError
from pipeline.feed import net
from pipeline.feed.fetch import Fetched, episode_key
from pipeline.feed.manifest import LineOptions, line_for, manifest_id, select
from pipeline.feed.read import Enclosure, read_feed
from pipeline.s3uri import S3Uri
from tests.feed.podcast import rss

ITEMS = [("guid-1", "One & only", "https://example.com/a/one.mp3", 1000, "audio/mpeg"),
         ("guid-2", "Two", "https://example.com/a/two.mp3?x=1", 0, "audio/mpeg"),
         ("guid-3", "Bad", "file:///etc/passwd", 10, "audio/mpeg")]

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom show</title><id>urn:show</id>
<updated>2024-02-01T00:00:00Z</updated>
<entry><title>First</title><id>urn:ep:1</id><updated>2024-02-01T00:00:00Z</updated>
<link rel="enclosure" href="https://example.com/first.m4a" type="audio/mp4" length="42"/></entry>
</feed>
"""


def test_rss_with_itunes_tags(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(rss("https://example.com/", ITEMS))
    feed = read_feed(str(path))
    assert feed.title == "Field Notes" and feed.pages == 1
    first = feed.episodes[0]
    assert (first.guid, first.title, first.episode, first.season) == ("guid-1", "One & only", 1, 2)
    assert first.published == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert first.enclosure == Enclosure("https://example.com/a/one.mp3", "audio/mpeg", 1000)
    assert [e.guid for e in feed.episodes] == ["guid-1", "guid-2", "guid-3"]


def test_atom(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"
    path.write_text(ATOM)
    feed = read_feed(str(path))
    assert feed.title == "Atom show"
    assert feed.episodes[0].guid == "urn:ep:1"
    assert feed.episodes[0].enclosure == Enclosure("https://example.com/first.m4a", "audio/mp4", 42)


@pytest.mark.parametrize("url, why", [
    ("file:///etc/passwd", "not an http"), ("ftp://example.com/a.mp3", "not an http"),
    ("http://127.0.0.1/a.mp3", "loopback"), ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://10.0.0.8/a.mp3", "private"), ("http://[::1]/a.mp3", "loopback"), ("http:///nohost", "no host"),
    ("http://[::ffff:192.168.1.1]/", "private"),
])
def test_default_policy_refuses(url: str, why: str) -> None:
    with pytest.raises(FeedError, match=why):
        net.check_url(url, net.AddressPolicy())


def test_loopback_is_allowed_only_when_asked() -> None:
    net.check_url("http://127.0.0.1:9/a.mp3", net.LOOPBACK_ALLOWED)
    with pytest.raises(FeedError, match="private"):
        net.check_url("http://10.1.2.3/a.mp3", net.LOOPBACK_ALLOWED)


@pytest.mark.parametrize("enclosure, audio", [
    (Enclosure("https://e/x.mp3", "audio/mpeg", 1), True), (Enclosure("https://e/x.mp4", "video/mp4", 1), False),
    (Enclosure("https://e/x.m4a", "", None), True),
    (Enclosure("https://e/x.pdf", "application/octet-stream", 1), False),
])
def test_audio_enclosures(enclosure: Enclosure, audio: bool) -> None:
    assert enclosure.is_audio() is audio


def test_manifest_line_carries_the_episode(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(rss("https://example.com/", ITEMS))
    episode = read_feed(str(path)).episodes[0]
    uri = episode_key(S3Uri("in-bucket", "episodes"), episode)
    assert uri.key.startswith("episodes/") and uri.key.endswith(".mp3")
    line = line_for(Fetched(episode, uri, 1000, True),
                    LineOptions("BKkWQENix2VWeAv6YV5R", "eleven_multilingual_sts_v2", "s3://out/revoiced",
                                "mp3_44100_128", {"speed": 1.1}, feed_url="https://example.com/feed.xml"))
    assert line["id"] == "guid-1" and line["copy_tags"] is True
    assert line["output"].startswith("s3://out/revoiced/") and line["voice_settings"] == {"speed": 1.1}
    assert line["metadata"] == {"title": "One & only", "guid": "guid-1", "feed": "https://example.com/feed.xml",
                                "published": "2024-01-01T10:00:00+00:00", "episode": 1, "season": 2,
                                "enclosure": "https://example.com/a/one.mp3"}


def test_long_guids_are_bounded_and_distinct() -> None:
    a, b = manifest_id("x" * 300), manifest_id("x" * 299 + "y")
    assert len(a) <= 200 and a != b and manifest_id("short") == "short"


def test_since_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(rss("https://example.com/", ITEMS))
    episodes = read_feed(str(path)).episodes
    since = datetime(2024, 1, 2, tzinfo=UTC)
    assert [e.guid for e in select(episodes, since=since, limit=None)] == ["guid-2", "guid-3"]
    assert [e.guid for e in select(episodes, since=None, limit=1)] == ["guid-1"]


def test_master_reaches_the_line_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_text(rss("https://example.com/", ITEMS))
    episode = read_feed(str(path)).episodes[0]
    fetched = Fetched(episode, episode_key(S3Uri("in-bucket", "episodes"), episode), 1000, True)
    options = {"voice_id": "BKkWQENix2VWeAv6YV5R", "model_id": "eleven_multilingual_sts_v2",
               "output_prefix": "s3://out/revoiced", "output_format": "mp3_44100_128"}
    assert line_for(fetched, LineOptions(**options, master="podcast"))["master"] == "podcast"
    assert line_for(fetched, LineOptions(**options, master={"lufs": -16}))["master"] == {"lufs": -16}
    with pytest.raises(ValueError):
        line_for(fetched, LineOptions(**options, master={"lufs": 3}))


def test_paged_atom_feed_on_disk(tmp_path: Path) -> None:
    second = ATOM.replace("urn:ep:1", "urn:ep:2").replace("first.m4a", "second.m4a")
    first = ATOM.replace("<updated>2024-02-01T00:00:00Z</updated>\n<entry>",
                         '<updated>2024-02-01T00:00:00Z</updated>\n<link rel="next" href="page2.atom"/>\n<entry>', 1)
    (tmp_path / "page1.atom").write_text(first)
    (tmp_path / "page2.atom").write_text(second)
    feed = read_feed(str(tmp_path / "page1.atom"))
    assert [e.guid for e in feed.episodes] == ["urn:ep:1", "urn:ep:2"] and feed.pages == 2
