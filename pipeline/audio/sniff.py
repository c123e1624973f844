"""What an input is, told by its first bytes: the one place that picks the demuxer ffmpeg may use.

ffmpeg left to guess picks any of its few hundred demuxers, and some of them open other things by themselves: an HLS
playlist (``#EXTM3U``) fetches the files and URLs it names, a concat list (``ffconcat``) reads the files it lists, an
image sequence reads its neighbours, a QuickTime reference movie follows its data references. So the pipeline reads
the magic bytes itself and names the demuxer; anything that is not one of a short list of audio containers is never
handed to ffmpeg at all.

Pure Python on a few kilobytes of the head: no ffmpeg, no numpy (``plan`` imports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AUDIO_DEMUXERS", "HEAD_BYTES", "Sniffed", "id3_size", "looks_like_text", "mpeg_frame", "sniff"]

#: bytes of the head read to decide (an MP3's ID3 tag can be longer: then the demuxer is decided by the tag alone)
HEAD_BYTES = 64 * 1024
#: the audio containers ffmpeg may open, by ffmpeg demuxer name (raw formats are declared, never sniffed)
AUDIO_DEMUXERS = ("wav", "w64", "flac", "mp3", "aac", "ogg", "mov", "aiff", "caf")
#: what these containers are called in messages
AUDIO_NAMES = "WAV, FLAC, MP3, AAC, Ogg (Vorbis, Opus), MP4/M4A, AIFF or CAF"

_W64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")
_W64_WAVE = bytes.fromhex("77617665f3acd3118cd100c04f8edb8a")
#: ISO media brands of still images (HEIF, AVIF, JPEG 2000): an ``ftyp`` that is not a recording
_IMAGE_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"jp2 ",
                 b"jpx ", b"crx ")
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
#: first bytes of common files that are not audio, for the message (named as ffmpeg names them where it has a name)
_NOT_AUDIO = (
    (b"\x89PNG\r\n\x1a\n", "png_pipe"), (b"\xff\xd8\xff", "jpeg_pipe"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp_pipe"), (b"%PDF", "pdf"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"),
    (b"\x1aE\xdf\xa3", "matroska,webm"), (b"FLV", "flv"), (b"\x00\x00\x01\xba", "mpeg"), (b"\x00\x00\x01\xb3", "mpeg"),
    (b"\x7fELF", "an executable"),
)
#: playlists and lists of other inputs, which ffmpeg would follow
_PLAYLIST_STARTS = ((b"#EXTM3U", "hls"), (b"#EXT-X-", "hls"), (b"ffconcat", "concat"), (b"[playlist]", "pls playlist"),
                    (b"<?xml", "xml"), (b"<asx", "asx playlist"), (b"<smil", "smil playlist"))
#: a text line naming something to open: a URL (any scheme), an absolute path, a concat ``file`` line
_OPENS_SOMETHING = re.compile(rb"^\s*(?:[a-z][a-z0-9+.\-]*://|[a-z]+:[/\\]|/|\\\\|file\s|#EXT)", re.IGNORECASE | re.M)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class Sniffed:
    """The demuxer for a head of bytes (``None``: not an audio container ffmpeg may open) and what it looks like."""

    demuxer: str | None
    looks_like: str
    #: a playlist or list of other inputs (HLS, concat, PLS, text lines naming URLs or paths): never followed
    playlist: bool = False


def sniff(head: bytes) -> Sniffed:
    """Decide by the magic bytes of ``head`` (the file's first bytes, ``HEAD_BYTES`` is plenty)."""
    riff = head[8:12]
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and riff == b"WAVE":
        return Sniffed("wav", "wav")
    if head[:16] == _W64_RIFF and head[24:40] == _W64_WAVE:
        return Sniffed("w64", "w64")
    if head[:4] == b"fLaC":
        return Sniffed("flac", "flac")
    if head[:4] == b"OggS":
        return Sniffed("ogg", "ogg")
    if head[:4] == b"FORM" and riff in (b"AIFF", b"AIFC"):
        return Sniffed("aiff", "aiff")
    if head[:4] == b"caff":
        return Sniffed("caf", "caf")
    if _is_iso_box(head):
        if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
            return Sniffed(None, f"an image ({head[8:12].decode('latin-1').strip()})")
        return Sniffed("mov", "mov,mp4,m4a,3gp,3g2,mj2")
    if head[:3] == b"ID3":
        return _after_id3(head)
    if head[:4] == b"RIFF":
        return Sniffed(None, {b"WEBP": "webp_pipe", b"AVI ": "avi"}.get(riff, "riff"))
    frame = _mpeg_audio(head, 0)
    if frame:
        return Sniffed(frame, frame)
    for magic, name in _NOT_AUDIO:
        if head.startswith(magic):
            return Sniffed(None, name)
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return Sniffed(None, "mpegts")
    return _text_or_data(head)


def id3_size(head: bytes) -> int:
    """Bytes taken by the ID3v2 tag at the start of ``head`` (header and footer included); 0 if there is none."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)


def looks_like_text(head: bytes) -> bool:
    """Readable text (UTF-8 without NULs or control characters but tabs and line ends): never audio samples."""
    sample = head[:4096]
    if not sample or b"\x00" in sample:
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # not just a character cut at the end of the sample
            return False
        text = sample[:error.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r\n\ufeff" for ch in text)


def _is_iso_box(head: bytes) -> bool:
    """An ISO media / QuickTime file: a top-level box (``ftyp``, ``moov``, or one QuickTime starts with)."""
    size = int.from_bytes(head[:4], "big")
    if len(head) < 8 or not (size in (0, 1) or size >= 8):
        return False
    return head[4:8] in (b"ftyp", b"moov") or head[4:8] in _MOV_BOXES and not looks_like_text(head)


def _after_id3(head: bytes) -> Sniffed:
    """An ID3v2 tag, then FLAC, ADTS AAC or (by far the most common, and the default) MPEG audio."""
    start = id3_size(head)
    while start < len(head) and head[start] == 0:  # padding written past the declared size
        start += 1
    if start >= len(head) - 4:  # the tag fills the head (a large cover picture): an MP3 tag
        return Sniffed("mp3", "mp3")
    if head[start:start + 4] == b"fLaC":
        return Sniffed("flac", "flac")
    if head[start:start + 3] == b"ID3":
        return _after_id3(head[start:])
    return Sniffed(_mpeg_audio(head, start) or "mp3", "mp3")


def _mpeg_audio(head: bytes, at: int) -> str | None:
    """``mp3`` or ``aac`` if an MPEG audio or ADTS frame header starts at ``at`` (and the next one where it fits)."""
    first = _frame_length(head, at)
    if first is None:
        return None
    kind, length = first
    following = _frame_length(head, at + length)
    if at + length + 4 <= len(head) and (following is None or following[0] != kind):
        return None
    return kind


def mpeg_frame(head: bytes, at: int) -> tuple[int, int] | None:
    """``(bytes, samples)`` of the MPEG audio frame whose header starts at ``at`` (ADTS AAC is not one); None if none
    does. Samples a frame decodes to: 384 for layer I, 1152 for layer II, and for layer III 1152 (MPEG-1) or 576."""
    found = _frame_length(head, at)
    if found is None or found[0] != "mp3":
        return None
    version, layer = (head[at + 1] >> 3) & 0x03, (head[at + 1] >> 1) & 0x03
    samples = {3: 384, 2: 1152}.get(layer, 1152 if version == 3 else 576)
    return found[1], samples


def _frame_length(head: bytes, at: int) -> tuple[str, int] | None:
    if len(head) < at + 7 or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = head[at + 1], head[at + 2]
    if b1 & 0xF6 == 0xF0:  # ADTS: 12-bit sync, layer 00
        if (b2 >> 2) & 0x0F > 12:
            return None
        length = ((head[at + 3] & 0x03) << 11) | (head[at + 4] << 3) | (head[at + 5] >> 5)
        return ("aac", length) if length >= 7 else None
    version, layer = (b1 >> 3) & 0x03, (b1 >> 1) & 0x03
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 0x03, (b2 >> 1) & 0x01
    if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    rate = _MPEG_RATES[version][rate_index]
    v1 = version == 3
    kbps = _bitrate(v1, layer, bitrate_index)
    if layer == 3:  # layer I
        return "mp3", (12 * kbps * 1000 // rate + padding) * 4
    per_frame = 144 if v1 or layer == 2 else 72
    return "mp3", per_frame * kbps * 1000 // rate + padding


def _bitrate(v1: bool, layer: int, index: int) -> int:
    tables = {
        (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
        (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
        (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
        (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    }
    table = tables.get((v1, layer), (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160))
    return table[index]


def _text_or_data(head: bytes) -> Sniffed:
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for start, name in _PLAYLIST_STARTS:
        if stripped[:len(start)].lower() == start.lower():
            return Sniffed(None, name, playlist=True)
    if looks_like_text(head):
        if _OPENS_SOMETHING.search(head[:HEAD_BYTES]):
            return Sniffed(None, "text lines naming URLs or files", playlist=True)
        return Sniffed(None, "text")
    return Sniffed(None, "unknown data")
