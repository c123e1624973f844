"""The podcast back-catalog workflow end to end, on loopback: a feed of 3 tagged episodes → ``manifest from-feed``
→ ``submit --wait`` (a real worker, the offline server) → ``feed``. The generated feeds parse with feedparser and
podcastparser; every item has a unique GUID, an enclosure as long as the S3 object and of the right type."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import feedparser
import podcastparser
import pytest

from pipeline.local.services import LocalStack
from tests.feed.podcast import make_cover, make_episode, rss, serve
from tests.support import lane

VOICE = "BKkWQENix2VWeAv6YV5R"
SPEED = 1.2
BASE = "https://cdn.example.com/show/"


def _site(root: Path, base: str) -> dict[str, Any]:
    cover = make_cover(root / "cover.png")
    items = []
    for n, name in enumerate(("one", "two", "three")):
        path = make_episode(root / f"{name}.mp3", f"Episode {name}", cover, seed=n)
        url = f"{base}/r/{name}.mp3" if name == "two" else f"{base}/{name}.mp3"
        items.append((f"urn:field-notes:{name}", f"Episode {name}", url, path.stat().st_size, "audio/mpeg"))
    items.append(("urn:field-notes:passwd", "Sneaky", "file:///etc/passwd", 100, "audio/mpeg"))
    (root / "feed.xml").write_text(rss(base, items))
    return {"cover": cover, "items": items}


def _run(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture(scope="module")
def workflow(offline_sts: LocalStack, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("podcast")
    root = tmp / "site"
    root.mkdir()
    bucket = "podcast-flow"
    s3.create_bucket(Bucket=bucket)
    with serve(root, redirects={"/r/two.mp3": "/two.mp3"}) as (base, _hits), lane(offline_sts) as test_lane:
        site = _site(root, base)
        env = test_lane.env(STS_RUNS_URI=f"s3://{bucket}/runs")
        made = _run(env, "manifest", "from-feed", f"{base}/feed.xml", "--voice", VOICE, "--allow-loopback",
                    "--voice-settings", json.dumps({"speed": SPEED}), "--input-prefix", f"s3://{bucket}/episodes",
                    "--output-prefix", f"s3://{bucket}/revoiced", "-o", str(tmp))
        assert made.returncode == 1 and "3 episodes" in made.stdout, made.stdout + made.stderr
        manifest = tmp / "feed.jsonl"
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        extra = _extra_lines(lines, bucket)
        s3.put_object(Bucket=bucket, Key="episodes/ghost.mp3", Body=b"<html>not an episode</html>")
        ghost = {**extra[0], "input": f"s3://{bucket}/episodes/ghost.mp3", "output": f"s3://{bucket}/revoiced/ghost.mp3",
                 "output_format": "mp3_44100_128", "metadata": {"guid": "urn:field-notes:ghost"}}
        manifest.write_text("".join(json.dumps(line) + "\n" for line in [*lines, *extra, ghost]))
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "240", "--run-id", "podcast-1",
                                  STS_RUNS_URI=f"s3://{bucket}/runs")
        assert submitted.returncode == 1, submitted.stderr[-3000:]  # the ghost episode fails, the rest succeed
        feeds = {}
        for name, flags in (("new", ()), ("alternate", ("--alternate",))):
            out = tmp / f"{name}.xml"
            written = _run(env, "feed", "--run", "podcast-1", "--source", f"{base}/feed.xml", "--base-url", BASE,
                           "-o", str(out), "--allow-loopback", "--edition", "Bram voice edition", *flags)
            assert written.returncode == 1, written.stdout + written.stderr
            assert "3 episodes, 1 left out" in written.stdout, written.stdout + written.stderr
            assert "left out: urn:field-notes:ghost" in written.stderr and "not_audio" in written.stderr
            feeds[name] = out.read_bytes()
    return {"tmp": tmp, "bucket": bucket, "lines": lines, "extra": extra, "feeds": feeds, **site}


def _extra_lines(lines: list[dict[str, Any]], bucket: str) -> list[dict[str, Any]]:
    """More outputs of the first episode: opus with tags, and the same mp3 mastered to -16 LUFS, -1 dBTP."""
    first = dict(lines[0])
    first.pop("id")
    opus = {**first, "output": f"s3://{bucket}/revoiced/first.opus", "output_format": "opus_48000_64",
            "metadata": {**first["metadata"], "guid": "extra:opus"}}
    mastered = {**first, "output": f"s3://{bucket}/revoiced/first-mastered.mp3",
                "master": {"lufs": -16, "true_peak_db": -1.0},
                "metadata": {**first["metadata"], "guid": "extra:master"}}
    return [opus, mastered]


def _s3_sizes(s3: Any, bucket: str) -> dict[str, int]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="revoiced/")["Contents"]
    return {o["Key"]: o["Size"] for o in listed if not o["Key"].endswith(".json")}


def test_the_new_feed_parses_and_matches_s3(workflow: dict[str, Any], s3: Any) -> None:
    body = workflow["feeds"]["new"]
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.feed.title == "Field Notes (Bram voice edition)"
    sizes = _s3_sizes(s3, workflow["bucket"])
    entries = parsed.entries
    assert [e.title for e in entries] == ["Episode one", "Episode two", "Episode three"]
    guids = [e.id for e in entries]
    assert len(set(guids)) == 3 and not set(guids) & {line["id"] for line in workflow["lines"]}
    for entry in entries:
        enclosure = entry.enclosures[0]
        key = enclosure.href.removeprefix(BASE)
        assert int(enclosure.length) == sizes[key] and enclosure.type == "audio/mpeg"
        assert entry.itunes_duration and "About" in entry.summary
    podcast = podcastparser.parse(BASE + "feed.xml", io.BytesIO(body))
    assert len(podcast["episodes"]) == 3
    assert len({e["guid"] for e in podcast["episodes"]}) == 3
    for episode in podcast["episodes"]:
        enclosure = episode["enclosures"][0]
        assert enclosure["file_size"] == sizes[enclosure["url"].removeprefix(BASE)]
        assert enclosure["mime_type"] == "audio/mpeg" and episode["total_time"] > 0


def test_the_alternate_feed_keeps_the_source_and_adds_alternates(workflow: dict[str, Any], s3: Any) -> None:
    body = workflow["feeds"]["alternate"]
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    assert [e.id for e in parsed.entries] == [i[0] for i in workflow["items"]]  # the source's GUIDs, untouched
    assert [e.enclosures[0].href for e in parsed.entries] == [i[2] for i in workflow["items"]]
    text = body.decode()
    assert text.count("<podcast:alternateEnclosure") == 3 and text.count('type="sri" value="sha256-') == 3
    assert 'xmlns:podcast="https://podcastindex.org/namespace/1.0"' in text
    assert "xmlns:itunes=" in text and "ns0:" not in text
    podcast = podcastparser.parse(BASE + "feed.xml", io.BytesIO(body))
    assert len(podcast["episodes"]) >= 3


def _download(s3: Any, bucket: str, key: str, tmp: Path) -> Path:
    local = tmp / key.replace("/", "_")
    s3.download_file(bucket, key, str(local))
    return local


def test_every_output_keeps_title_cover_and_scaled_chapters(workflow: dict[str, Any], s3: Any) -> None:
    import base64
    import hashlib

    from mutagen.flac import Picture
    from mutagen.id3 import ID3
    from mutagen.oggopus import OggOpus

    from tests.feed.podcast import CHAPTERS_MS

    bucket, tmp = workflow["bucket"], workflow["tmp"]
    expected = [(a / SPEED, b / SPEED) for a, b in CHAPTERS_MS]
    for line in [*workflow["lines"], *workflow["extra"]]:
        key = line["output"].removeprefix(f"s3://{bucket}/")
        local = _download(s3, bucket, key, tmp)
        guid = line["metadata"]["guid"]
        title = "Episode " + {"extra:opus": "one", "extra:master": "one"}.get(guid, guid.split(":")[-1])
        if key.endswith(".opus"):
            tags = OggOpus(local).tags
            assert tags["TITLE"] == [title]
            assert Picture(base64.b64decode(tags["METADATA_BLOCK_PICTURE"][0])).data == workflow["cover"]
            starts = [int(round(float(tags[f"CHAPTER{n:03d}"][0].split(":")[2]) * 1000)) for n in (1, 2, 3)]
            assert all(abs(got - want[0]) <= 50 for got, want in zip(starts, expected, strict=False))
        else:
            tags = ID3(local)
            assert str(tags["TIT2"]) == title and tags.getall("APIC")[0].data == workflow["cover"]
            chapters = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
            assert len(chapters) == 3 and [str(c.sub_frames["TIT2"]) for c in chapters] == ["Part 1", "Part 2",
                                                                                          "Part 3"]
            for chapter, (start, end) in zip(chapters, expected, strict=False):
                assert abs(chapter.start_time - start) <= 50 and abs(chapter.end_time - end) <= 50
        record = json.loads(s3.get_object(Bucket=bucket, Key=key + ".provenance.json")["Body"].read())
        assert record["output"]["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()  # of the tagged file


def _samples(path: Path) -> int:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"], check=True,
                         capture_output=True).stdout
    return len(raw) // 2


def test_the_mastered_output_meets_the_target_and_keeps_its_length(workflow: dict[str, Any], s3: Any) -> None:
    import re

    bucket, tmp = workflow["bucket"], workflow["tmp"]
    mastered = _download(s3, bucket, "revoiced/first-mastered.mp3", tmp)
    plain = _download(s3, bucket, workflow["lines"][0]["output"].removeprefix(f"s3://{bucket}/"), tmp)
    meter = subprocess.run(["ffmpeg", "-nostats", "-hide_banner", "-i", str(mastered), "-af", "ebur128=peak=true",
                            "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    integrated = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", meter)[-1])
    true_peak = float(re.findall(r"Peak:\s+(-?[\d.]+) dBFS", meter)[-1])
    assert abs(integrated + 16.0) <= 0.5 and true_peak <= -1.0, (integrated, true_peak)
    assert _samples(mastered) == _samples(plain)
    record = json.loads(s3.get_object(Bucket=bucket, Key="revoiced/first-mastered.mp3.provenance.json")["Body"].read())
    mastering = record["quality"]["mastering"]
    assert set(mastering["before"]) == set(mastering["after"]) == {"lufs", "true_peak_db", "lra"}
    assert abs(mastering["after"]["lufs"] + 16.0) <= 0.5 and mastering["flags"] == []
    assert mastering["before"]["lufs"] < -18.0  # the conversion left it quieter than the target
