"""Tags carried over: an mp3 source's ID3 (title, cover, CHAP/CTOC with sub-frames) onto mp3 and opus outputs,
chapter times scaled by 1/speed; a source without tags, a hostile one, and outputs that hold none."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import Picture
from mutagen.id3 import ID3
from mutagen.oggopus import OggOpus

from pipeline.audio.tags import copy_tags
from tests.feed.podcast import CHAPTERS_MS, make_cover, make_episode
from tests.support import write_input


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    cover = make_cover(tmp_path / "cover.png")
    return make_episode(tmp_path / "source.mp3", "Listening to Glaciers", cover), cover


def _output(tmp_path: Path, suffix: str) -> Path:
    wav = write_input(tmp_path / "out.wav", 4.0, seed=5)
    out = tmp_path / f"out{suffix}"
    codec = ["-c:a", "libopus"] if suffix == ".opus" else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *codec, str(out)], check=True)
    return out


@pytest.mark.parametrize("speed", [1.0, 1.25])
def test_mp3_gets_title_cover_and_scaled_chapters(tmp_path: Path, source: tuple[Path, bytes], speed: float) -> None:
    path, cover = source
    out = _output(tmp_path, ".mp3")
    summary = copy_tags(path, out, codec="mp3", speed=speed)
    assert summary == {"copied": True, "chapters": 3, "pictures": 1}
    tags = ID3(out)
    assert str(tags["TIT2"]) == "Listening to Glaciers" and str(tags["TPE1"]) == "Field Notes"
    assert tags.getall("APIC")[0].data == cover
    chapters = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
    assert [(c.start_time, c.end_time) for c in chapters] == [(round(a / speed), round(b / speed))
                                                             for a, b in CHAPTERS_MS]
    assert [str(c.sub_frames["TIT2"]) for c in chapters] == ["Part 1", "Part 2", "Part 3"]
    toc = tags.getall("CTOC")[0]
    assert toc.child_element_ids == ["ch0", "ch1", "ch2"] and str(toc.sub_frames["TIT2"]) == "Contents"


def test_opus_gets_vorbis_comments_picture_and_chapters(tmp_path: Path, source: tuple[Path, bytes]) -> None:
    path, cover = source
    out = _output(tmp_path, ".opus")
    assert copy_tags(path, out, codec="opus", speed=1.5)["copied"]
    tags = OggOpus(out).tags
    assert tags["TITLE"] == ["Listening to Glaciers"] and tags["ALBUM"] == ["Field Notes (back catalog)"]
    assert Picture(base64.b64decode(tags["METADATA_BLOCK_PICTURE"][0])).data == cover
    assert tags["CHAPTER002"] == ["00:00:01.000"] and tags["CHAPTER003NAME"] == ["Part 3"]


def test_opus_source_tags_reach_an_mp3(tmp_path: Path, source: tuple[Path, bytes]) -> None:
    path, cover = source
    opus = _output(tmp_path, ".opus")
    copy_tags(path, opus, codec="opus")
    out = tmp_path / "again.mp3"
    out.write_bytes(_output(tmp_path, ".mp3").read_bytes())
    assert copy_tags(opus, out, codec="mp3")["chapters"] == 3
    tags = ID3(out)
    assert str(tags["TIT2"]) == "Listening to Glaciers" and tags.getall("APIC")[0].data == cover
    assert [c.start_time for c in sorted(tags.getall("CHAP"), key=lambda c: c.start_time)] == [0, 1500, 3000]


def test_nothing_to_copy(tmp_path: Path) -> None:
    plain = _output(tmp_path, ".mp3")
    out = tmp_path / "plain-out.mp3"
    out.write_bytes(plain.read_bytes())
    assert copy_tags(plain, out, codec="mp3") == {"copied": False, "why": "the source has no tags"}
    assert copy_tags(plain, out, codec="pcm")["copied"] is False


def test_unreadable_tags_leave_the_output_as_it_was(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.mp3"
    hostile.write_bytes(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + b"\xff" * 64)  # a header claiming 256 MB of frames
    out = _output(tmp_path, ".mp3")
    before = out.read_bytes()
    assert copy_tags(hostile, out, codec="mp3")["copied"] is False
    assert out.read_bytes() == before
