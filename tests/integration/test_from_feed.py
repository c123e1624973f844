"""``manifest from-feed`` against a feed served on loopback and the moto S3 server: 3 episodes stored (one behind
a redirect), the ``file:`` and non-audio items reported and skipped, and a second run downloads nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import FeedError
from pipeline.feed import net
from pipeline.feed.read import read_feed
from pipeline.local.services import LocalStack
from tests.feed.podcast import make_cover, make_episode, rss, serve

VOICE = "BKkWQENix2VWeAv6YV5R"


def _podcast(root: Path, base: str) -> list[tuple[str, str, str, int, str]]:
    cover = make_cover(root / "cover.png")
    items = []
    for n, name in enumerate(("one", "two", "three")):
        path = make_episode(root / f"{name}.mp3", f"Episode {name}", cover, seed=n)
        url = f"{base}/r/{name}.mp3" if name == "two" else f"{base}/{name}.mp3"
        items.append((f"urn:field-notes:{name}", f"Episode {name}", url, path.stat().st_size, "audio/mpeg"))
    items.append(("urn:field-notes:passwd", "Sneaky", "file:///etc/passwd", 100, "audio/mpeg"))
    items.append(("urn:field-notes:pdf", "Show notes", f"{base}/notes.pdf", 10, "application/pdf"))
    (root / "feed.xml").write_text(rss(base, items))
    return items


def _from_feed(stack: LocalStack, feed: str, out: Path, bucket: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "manifest", "from-feed", feed, "--voice", VOICE, "--allow-loopback",
         "--input-prefix", f"s3://{bucket}/episodes", "--output-prefix", f"s3://{bucket}/revoiced", "-o", str(out),
         *extra], env=stack.env(), capture_output=True, text=True, timeout=120)


def test_from_feed_stores_each_episode_once(stack: LocalStack, s3: Any, bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    with serve(root, redirects={"/r/two.mp3": "/two.mp3"}) as (base, hits):
        items = _podcast(root, base)
        first = _from_feed(stack, f"{base}/feed.xml", tmp_path / "m1", bucket)
        downloads = [h for h in hits if h.startswith("GET") and h.endswith(".mp3")]
        hits.clear()
        second = _from_feed(stack, f"{base}/feed.xml", tmp_path / "m2", bucket)
        again = [h for h in hits if h.startswith("GET") and h.endswith(".mp3")]
    assert first.returncode == 1, first.stderr  # items were skipped
    assert "file:///etc/passwd" in first.stderr and "not an http(s) URL" in first.stderr
    assert "notes.pdf" in first.stderr and "not audio" in first.stderr
    assert "3 episodes" in first.stdout and "3 downloaded" in first.stdout
    assert sorted(downloads) == ["GET /one.mp3", "GET /r/two.mp3", "GET /three.mp3", "GET /two.mp3"]
    stored = s3.list_objects_v2(Bucket=bucket, Prefix="episodes/")["Contents"]
    assert sorted(o["Size"] for o in stored) == sorted(i[3] for i in items[:3])
    assert again == [] and "0 downloaded, 3 already in S3" in second.stdout, second.stderr
    lines = [json.loads(line) for line in (tmp_path / "m1" / "feed.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["urn:field-notes:one", "urn:field-notes:two", "urn:field-notes:three"]
    assert all(line["copy_tags"] and line["metadata"]["feed"] == f"{base}/feed.xml" for line in lines)
    validated = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(tmp_path / "m1" / "feed.jsonl")],
                               env=stack.env(), capture_output=True, text=True, timeout=60)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_a_redirect_to_a_refused_place_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "feed.xml").write_text(rss("x", []))
    with serve(tmp_path, redirects={"/go": "file:///etc/passwd", "/meta": "http://169.254.169.254/"}) as (base, _):
        for path in ("/go", "/meta"):
            with pytest.raises(FeedError, match="refused|not an http"):
                read_feed(f"{base}{path}", policy=net.LOOPBACK_ALLOWED)


def test_paged_feed_is_followed_and_bounded(tmp_path: Path) -> None:
    for n in range(4):
        later = f"/page{n + 1}.xml" if n < 3 else None
        (tmp_path / f"page{n}.xml").write_text(rss("x", [(f"g{n}", f"E{n}", f"https://e.com/{n}.mp3", 1, "audio/mpeg")],
                                                  next_url=later))
    with serve(tmp_path) as (base, _hits):
        whole = read_feed(f"{base}/page0.xml", policy=net.LOOPBACK_ALLOWED)
        bounded = read_feed(f"{base}/page0.xml", policy=net.LOOPBACK_ALLOWED, max_pages=2)
        with pytest.raises(FeedError, match="loopback"):
            read_feed(f"{base}/page0.xml")  # the default policy refuses this machine's addresses
    assert [e.guid for e in whole.episodes] == ["g0", "g1", "g2", "g3"] and whole.pages == 4
    assert [e.guid for e in bounded.episodes] == ["g0", "g1"] and bounded.problems




def test_an_enclosure_over_the_size_bound_is_skipped_and_nothing_is_stored(stack: LocalStack, s3: Any, bucket: str,
                                                                          tmp_path: Path) -> None:
    from pipeline.feed.catalog import build_catalog
    from pipeline.feed.fetch import FetchLimits
    from pipeline.feed.manifest import LineOptions
    from pipeline.s3uri import S3Uri
    from pipeline.storage.s3 import Storage

    (tmp_path / "big.mp3").write_bytes(b"\xff\xfb" + b"\x00" * 300_000)
    (tmp_path / "page.html").write_text("<html>login</html>")
    with serve(tmp_path) as (base, _hits):
        (tmp_path / "feed.xml").write_text(rss(base, [("g-big", "Big", f"{base}/big.mp3", 0, "audio/mpeg"),
                                                      ("g-html", "Html", f"{base}/page.html", 0, "audio/mpeg")]))
        feed = read_feed(f"{base}/feed.xml", policy=net.LOOPBACK_ALLOWED)
        with stack.applied():
            storage = Storage(s3)
            catalog = build_catalog(storage, feed.episodes, S3Uri(bucket, "episodes"),
                                    LineOptions(VOICE, "eleven_multilingual_sts_v2", f"s3://{bucket}/out",
                                                "mp3_44100_128"),
                                    limits=FetchLimits(max_bytes=100_000, policy=net.LOOPBACK_ALLOWED))
    assert catalog.lines == [] and len(catalog.skipped) == 2
    assert "size bound" in catalog.skipped[0] and "served text/html" in catalog.skipped[1]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_without_a_length_in_the_feed_one_head_tells_it_is_stored(stack: LocalStack, s3: Any, bucket: str,
                                                                 tmp_path: Path) -> None:
    from pipeline.feed.catalog import build_catalog
    from pipeline.feed.fetch import FetchLimits
    from pipeline.feed.manifest import LineOptions
    from pipeline.s3uri import S3Uri
    from pipeline.storage.s3 import Storage

    (tmp_path / "ep.mp3").write_bytes(b"\xff\xfb" + b"\x01" * 50_000)
    options = LineOptions(VOICE, "eleven_multilingual_sts_v2", f"s3://{bucket}/out", "mp3_44100_128")
    limits = FetchLimits(policy=net.LOOPBACK_ALLOWED)
    with serve(tmp_path) as (base, hits):
        (tmp_path / "feed.xml").write_text(rss(base, [("g-ep", "Ep", f"{base}/ep.mp3", 0, "audio/mpeg")]))
        episodes = read_feed(f"{base}/feed.xml", policy=net.LOOPBACK_ALLOWED).episodes
        with stack.applied():
            first = build_catalog(Storage(s3), episodes, S3Uri(bucket, "episodes"), options, limits=limits)
            hits.clear()
            second = build_catalog(Storage(s3), episodes, S3Uri(bucket, "episodes"), options, limits=limits)
    assert first.downloaded == 1 and second.downloaded == 0 and len(second.lines) == 1
    assert hits == ["HEAD /ep.mp3"]
