"""The source's tags carried over to the converted file: what a podcast app shows (title, artist, album, year,
comments, cover art) and its chapters.

Conversion returns bare audio, so without this an episode loses its artwork and chapter list. For mp3 outputs the
source's ID3 frames are copied as they are (``CHAP``/``CTOC`` with every sub-frame: chapter titles, links, images),
with chapter times divided by ``voice_settings.speed``, since a faster voice makes the episode shorter. For opus
outputs the same facts become Vorbis comments, ``CHAPTERnnn`` comments and a ``METADATA_BLOCK_PICTURE``. Sources
may be mp3 (ID3) or Ogg/FLAC (Vorbis comments). Other outputs (PCM, μ-law, A-law) have nowhere to keep tags.

Tags come from strangers: pictures and chapters are bounded in number and size, and a source whose tags mutagen
cannot read is converted all the same, without tags (``copy_tags`` returns what was copied, for the log).
"""

from __future__ import annotations

import base64
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mutagen
from mutagen.flac import Picture
from mutagen.id3 import APIC, CHAP, COMM, CTOC, ID3, TALB, TDRC, TIT2, TPE1, ID3NoHeaderError
from mutagen.oggopus import OggOpus

log = logging.getLogger(__name__)

#: ID3 frames a podcast app reads; the rest (encoder settings, play counters, private frames) stay behind
ID3_KEPT = {"TIT2", "TIT3", "TPE1", "TPE2", "TALB", "TDRC", "TYER", "TCON", "TRCK", "TPOS", "TCOP", "TLAN", "COMM",
            "USLT", "APIC", "CHAP", "CTOC", "WXXX", "WOAS", "TXXX"}
MAX_PICTURE_BYTES = 8 * 1024 * 1024
MAX_CHAPTERS = 1000
_NO_OFFSET = 0xFFFFFFFF  # CHAP byte offsets: "not given" (they would be wrong in the new file anyway)


@dataclass
class Chapter:
    start_ms: int
    end_ms: int
    title: str


@dataclass
class PictureData:
    mime: str
    data: bytes
    kind: int = 3  # front cover
    description: str = ""


@dataclass
class SourceTags:
    """What the source says, in neutral form; ``id3`` keeps an mp3 source's frames for a faithful copy."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    year: str | None = None
    comments: list[str] = field(default_factory=list)
    pictures: list[PictureData] = field(default_factory=list)
    chapters: list[Chapter] = field(default_factory=list)
    id3: ID3 | None = None

    @property
    def empty(self) -> bool:
        return self.id3 is None and not (self.title or self.artist or self.album or self.pictures or self.chapters)


def _scaled(ms: int, speed: float) -> int:
    return ms if ms == _NO_OFFSET else int(round(ms / speed))


def _first(tags: Any, key: str) -> str | None:
    values = tags.get(key) or tags.get(key.lower()) or []
    return str(values[0]) if values else None


def _from_id3(tags: ID3) -> SourceTags:
    found = SourceTags(id3=tags if any(frame.FrameID in ID3_KEPT for frame in tags.values()) else None)
    found.title = str(tags["TIT2"]) if "TIT2" in tags else None
    found.artist = str(tags["TPE1"]) if "TPE1" in tags else None
    found.album = str(tags["TALB"]) if "TALB" in tags else None
    found.year = str(tags["TDRC"]) if "TDRC" in tags else None
    found.comments = [str(frame) for frame in tags.getall("COMM")]
    found.pictures = [PictureData(frame.mime, frame.data, int(frame.type), frame.desc)
                      for frame in tags.getall("APIC") if len(frame.data) <= MAX_PICTURE_BYTES]
    for frame in sorted(tags.getall("CHAP"), key=lambda f: f.start_time)[:MAX_CHAPTERS]:
        title = frame.sub_frames.get("TIT2")
        found.chapters.append(Chapter(frame.start_time, frame.end_time, str(title) if title else frame.element_id))
    return found


def _vorbis_time(ms: int) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _parse_vorbis_time(text: str) -> int | None:
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000))
    except ValueError:
        return None


def _from_vorbis(file: Any) -> SourceTags:
    tags = file.tags or {}
    found = SourceTags(title=_first(tags, "TITLE"), artist=_first(tags, "ARTIST"), album=_first(tags, "ALBUM"),
                       year=_first(tags, "DATE"), comments=list(tags.get("COMMENT") or tags.get("comment") or []))
    pictures = list(getattr(file, "pictures", []) or [])
    for encoded in (tags.get("METADATA_BLOCK_PICTURE") or tags.get("metadata_block_picture") or [])[:16]:
        try:
            pictures.append(Picture(base64.b64decode(encoded)))
        except Exception:  # noqa: BLE001  (a malformed picture block is left behind)
            continue
    found.pictures = [PictureData(p.mime, p.data, int(p.type), p.desc) for p in pictures
                      if len(p.data) <= MAX_PICTURE_BYTES]
    starts: list[tuple[int, int]] = []
    for n in range(1, MAX_CHAPTERS):
        ms = _parse_vorbis_time(_first(tags, f"CHAPTER{n:03d}") or "")
        if ms is not None:
            starts.append((n, ms))
    for index, (n, start) in enumerate(starts):
        end = starts[index + 1][1] if index + 1 < len(starts) else start
        found.chapters.append(Chapter(start, end or start, _first(tags, f"CHAPTER{n:03d}NAME") or f"Chapter {n}"))
    return found


def read_tags(source: Path) -> SourceTags:
    """The source's tags, or an empty set when it has none that this reads."""
    try:
        return _from_id3(ID3(source))
    except ID3NoHeaderError:
        pass
    file = mutagen.File(source)
    if file is not None and file.tags is not None and hasattr(file.tags, "get"):
        return _from_vorbis(file)
    return SourceTags()


def _copied_id3(source: ID3, speed: float) -> ID3:
    """The source's kept frames; chapter times divided by ``speed``, byte offsets dropped."""
    tags = ID3()
    chapters = 0
    for frame in source.values():
        if frame.FrameID not in ID3_KEPT or (frame.FrameID == "APIC" and len(frame.data) > MAX_PICTURE_BYTES):
            continue
        if frame.FrameID == "CHAP":
            chapters += 1
            if chapters > MAX_CHAPTERS:
                continue
            frame = CHAP(element_id=frame.element_id, start_time=_scaled(frame.start_time, speed),
                         end_time=_scaled(frame.end_time, speed), start_offset=_NO_OFFSET, end_offset=_NO_OFFSET,
                         sub_frames=copy.deepcopy(frame.sub_frames))
        tags.add(copy.deepcopy(frame) if frame.FrameID != "CHAP" else frame)
    return tags


def _built_id3(found: SourceTags, speed: float) -> ID3:
    """ID3 frames for a source that had none (Vorbis comments)."""
    tags = ID3()
    for frame_type, value in ((TIT2, found.title), (TPE1, found.artist), (TALB, found.album), (TDRC, found.year)):
        if value:
            tags.add(frame_type(encoding=3, text=[value]))
    for n, text in enumerate(found.comments):
        tags.add(COMM(encoding=3, lang="eng", desc=f"c{n}" if n else "", text=[text]))
    for picture in found.pictures:
        tags.add(APIC(encoding=3, mime=picture.mime, type=picture.kind, desc=picture.description, data=picture.data))
    ids = [f"chp{n}" for n in range(len(found.chapters))]
    for element_id, chapter in zip(ids, found.chapters, strict=True):
        tags.add(CHAP(element_id=element_id, start_time=_scaled(chapter.start_ms, speed),
                      end_time=_scaled(chapter.end_ms, speed), sub_frames=[TIT2(encoding=3, text=[chapter.title])]))
    if ids:
        tags.add(CTOC(element_id="toc", flags=3, child_element_ids=ids, sub_frames=[]))
    return tags


def _write_opus(output: Path, found: SourceTags, speed: float) -> None:
    file = OggOpus(output)
    if file.tags is None:
        file.add_tags()
    assert file.tags is not None
    for key, value in (("TITLE", found.title), ("ARTIST", found.artist), ("ALBUM", found.album),
                       ("DATE", found.year)):
        if value:
            file.tags[key] = [value]
    if found.comments:
        file.tags["COMMENT"] = found.comments
    blocks = []
    for picture in found.pictures:
        block = Picture()
        block.type, block.mime, block.desc, block.data = picture.kind, picture.mime, picture.description, picture.data
        blocks.append(base64.b64encode(block.write()).decode("ascii"))
    if blocks:
        file.tags["METADATA_BLOCK_PICTURE"] = blocks
    for n, chapter in enumerate(found.chapters, start=1):
        file.tags[f"CHAPTER{n:03d}"] = [_vorbis_time(_scaled(chapter.start_ms, speed))]
        file.tags[f"CHAPTER{n:03d}NAME"] = [chapter.title]
    file.save()


def copy_tags(source: Path, output: Path, *, codec: str, speed: float = 1.0) -> dict[str, Any]:
    """Copy ``source``'s tags onto ``output`` (an mp3 or opus file) in place; return a summary of what was copied.

    Never raises for the tags themselves: a source whose tags cannot be read leaves the output untagged (and says
    so in the summary). ``speed`` is the request's ``voice_settings.speed`` (chapters are scaled by 1/speed).
    """
    if codec not in ("mp3", "opus"):
        return {"copied": False, "why": f"{codec} outputs hold no tags"}
    try:
        found = read_tags(source)
        if found.empty:
            return {"copied": False, "why": "the source has no tags"}
        if codec == "mp3":
            tags = _copied_id3(found.id3, speed) if found.id3 is not None else _built_id3(found, speed)
            tags.save(output, v2_version=3)
        else:
            _write_opus(output, found, speed)
    except Exception as error:  # noqa: BLE001  (foreign tags: a parser error must not fail the conversion)
        log.warning("tags of %s not copied: %s: %s", source.name, type(error).__name__, str(error)[:200])
        return {"copied": False, "why": f"tags unreadable ({type(error).__name__})"}
    return {"copied": True, "chapters": len(found.chapters), "pictures": len(found.pictures)}
