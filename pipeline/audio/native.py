"""In-process probing and decoding with libsndfile, for the formats it reads as ffmpeg does; ffmpeg for the rest.

Each ffmpeg or ffprobe process costs ~0.06-0.07 CPU-s of start-up whatever the audio's length (``bench_job_cpu``),
while libsndfile reads a header in 0.2 ms and decodes 20 s of mp3 in 0.013 CPU-s. So the common cases are read
here, and every other case, and every file this module finds odd, goes to the ffmpeg path, whose checks and failure
records stay the pipeline's own:

- **WAV inputs** (integer or float PCM) are probed and counted here when libsndfile's header log shows that the
  header agrees with the file. A WAV cut short (with a partial last sample or not), with a streamed size or with
  anything unreadable past its data goes to ffprobe and ffmpeg, which judge it as they always have (a partial
  sample is a decode error: ``corrupt_audio``).
- **FLAC inputs** are probed here (STREAMINFO) and counted by ffmpeg: libsndfile reads no further than STREAMINFO's
  total-samples claim (a FLAC that claims 2 s and holds 90 s decodes to 2.0 s) and fails on one without a claim, so
  it cannot give the count, independent of the header, that the length limit and the bill rest on.
- **mp3 outputs** are read here when mono at the format's rate: the length check of every attempt counts frames
  (no decode), and the quality measure, once on the final output, decodes.
  libsndfile (mpg123) stops at its own idea of the length, a Xing header's frame count or, without one, an estimate
  from the first frame's bitrate that a VBR file outruns; so the MPEG frames are walked first (headers only), and a
  file whose frames hold more than libsndfile would read goes to ffmpeg. A decode that libsndfile gives up part-way
  (damaged frames) is finished by ffmpeg. mp3 *inputs* stay with ffmpeg: the same early stop, and the input check
  must tell damaged frames (ffmpeg reports them; libsndfile only gives up) from a clean decode.
- **Headerless outputs** (pcm_*, ulaw, alaw): the length is the byte count, the samples come by numpy (G.711 by the
  standard's expansion), bit for bit what ffmpeg's decode gives.
- **Ogg Opus outputs**: the length is the last complete page's granule position less the pre-skip, which is what a
  decode gives; the samples stay with ffmpeg (libsndfile decodes Opus slower than an ffmpeg process does).

Nothing is opened here before the sandbox's magic-byte check (``ffmpeg.check_input``, which refuses what the ffmpeg
path refuses, with its messages) has named the container, and every read is in blocks: memory stays flat for any
length. A function returns None when it does not apply; the caller then runs the ffmpeg path.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.audio.ffmpeg import check_input
from pipeline.audio.sniff import id3_size, mpeg_frame
from pipeline.formats import OutputFormat

__all__ = ["Header", "count_wav_s", "output_blocks", "output_samples", "read_header"]

#: libsndfile's WAV subtypes read here: the codec name ffprobe gives them, and their bits per sample
WAV_CODECS = {"PCM_U8": ("pcm_u8", 8), "PCM_16": ("pcm_s16le", 16), "PCM_24": ("pcm_s24le", 24),
              "PCM_32": ("pcm_s32le", 32), "FLOAT": ("pcm_f32le", 32), "DOUBLE": ("pcm_f64le", 64)}
_WAV_FORMATS = ("WAV", "WAVEX", "RF64")
#: what libsndfile's header log says when a header and its file disagree (``data : N (should be M)``, ``*** ...``),
#: and the one note of that kind about a valid file (ffmpeg writes WAVEXTENSIBLE without a 'fact' chunk)
_LOG_DOUBTS = ("should be", "***")
_LOG_BENIGN = ("should have a 'fact' chunk",)
#: beyond these a header is left to ffprobe, which says what it makes of it
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
#: frames a block read takes (counting an input; an output's blocks are the caller's size)
BLOCK_FRAMES = 1 << 16
#: an mp3 decode drops the Xing frame and the encoder's delay and padding: this many frames' samples at most
MP3_GAPLESS_FRAMES = 3
MP3_MAX_FRAME_SAMPLES = 1152
_WALK_CHUNK = 1 << 16
_MAX_MPEG_FRAME_BYTES = 4096
_ID3V1_BYTES = 128
_MPEG_HEADER_READ = 7  # the bytes sniff.mpeg_frame needs to see at a frame's start
_OGG_PAGE_HEADER_BYTES = 27
OPUS_RATE = 48000


@dataclass(frozen=True)
class Header:
    """What libsndfile read from an input's header, in ffprobe's terms (``codec``, ``format_name``, ``bit_rate``)."""

    codec: str
    format_name: str
    sample_rate: int
    channels: int
    frames: int  # the header's claim
    bit_rate: int | None  # None: none of its own (FLAC), so the size over the duration


def read_header(path: Path) -> Header | None:
    """The header of a WAV or FLAC input read here; None for another container or one left to ffprobe.

    ``InputError`` as ``ffmpeg.check_input`` raises it for what is not an audio container at all.
    """
    demuxer = check_input(path)
    if demuxer not in ("wav", "flac"):
        return None
    with _opened(path) as handle:
        if handle is None:
            return None
        return _wav_header(handle) if demuxer == "wav" else _flac_header(handle)


def count_wav_s(path: Path, *, stop_s: float | None) -> float | None:
    """Seconds of samples a WAV input holds, read here block by block to its end, or to just past ``stop_s``
    (``ceil(stop_s * rate)`` samples, as the ffmpeg count stops); None for a WAV that ``read_header`` leaves to
    ffmpeg, or one libsndfile fails to read (ffmpeg then decides what it is)."""
    if check_input(path) != "wav":
        return None
    with _opened(path) as handle:
        if handle is None or _wav_header(handle) is None:
            return None
        stop = None if stop_s is None else math.ceil(stop_s * handle.samplerate)
        frames = 0
        try:
            while stop is None or frames < stop:
                got = len(handle.read(BLOCK_FRAMES if stop is None else min(BLOCK_FRAMES, stop - frames),
                                      dtype="int16"))
                if not got:
                    break
                frames += got
        except sf.SoundFileError:
            return None
        return frames / handle.samplerate


def output_samples(path: Path, fmt: OutputFormat) -> int | None:
    """Samples an output in ``fmt`` holds at ``fmt``'s rate, counted here without decoding: by its size (headerless),
    by its MPEG frames and libsndfile's length (mp3), by its last Ogg page (opus); None when ffmpeg must count them.

    ``InputError`` as ``ffmpeg.check_input`` raises it (text declared as raw samples, a body that is no audio).
    """
    demuxer = check_input(path, input_args=fmt.ffmpeg_input_args())
    if fmt.headerless:
        return path.stat().st_size // _width(fmt)
    if fmt.codec == "opus":
        return _opus_samples(path) if demuxer == "ogg" and fmt.sample_rate == OPUS_RATE else None
    return _mp3_samples(path, fmt) if demuxer == "mp3" else None


def output_blocks(path: Path, fmt: OutputFormat, *, block_samples: int,
                  resume: Callable[[int], Iterator[np.ndarray]]) -> Iterator[np.ndarray] | None:
    """Mono float32 blocks of ``block_samples`` (the last one shorter) of an output decoded here (headerless, mp3),
    the samples ``decode.pcm_stream`` gives; None when ffmpeg must decode it.

    Should libsndfile give up part-way, ``resume(n)`` gives the rest: the blocks after the first ``n`` samples.
    ``InputError`` as ``ffmpeg.check_input`` raises it.
    """
    demuxer = check_input(path, input_args=fmt.ffmpeg_input_args())
    if fmt.headerless:
        return _raw_blocks(path, fmt, block_samples)
    if fmt.codec != "mp3" or demuxer != "mp3" or _mp3(path, fmt) is None:
        return None
    return _mp3_blocks(path, block_samples, resume)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[sf.SoundFile | None]:
    """``path`` opened by libsndfile, or None if it refuses it."""
    try:
        handle = sf.SoundFile(str(path))
    except sf.SoundFileError:
        yield None
        return
    with handle:
        yield handle


def _sane(handle: sf.SoundFile) -> bool:
    return 0 < handle.samplerate <= MAX_SAMPLE_RATE and 0 < handle.channels <= MAX_CHANNELS


def _doubted(handle: sf.SoundFile) -> bool:
    """libsndfile's log says the header and the file disagree (its first line names the file: not looked at)."""
    lines = handle.extra_info.splitlines()[1:]
    return any(any(doubt in line for doubt in _LOG_DOUBTS) and not any(note in line for note in _LOG_BENIGN)
               for line in lines)


def _wav_header(handle: sf.SoundFile) -> Header | None:
    codec = WAV_CODECS.get(handle.subtype)
    if handle.format not in _WAV_FORMATS or codec is None or not _sane(handle) or _doubted(handle):
        return None
    name, bits = codec
    return Header(codec=name, format_name="wav", sample_rate=handle.samplerate, channels=handle.channels,
                  frames=handle.frames, bit_rate=handle.samplerate * handle.channels * bits)


def _flac_header(handle: sf.SoundFile) -> Header | None:
    """STREAMINFO's claim; none (0, or libsndfile's "unknown") is left to ffprobe."""
    if handle.format != "FLAC" or not _sane(handle) or not 0 < handle.frames < 1 << 36:
        return None
    return Header(codec="flac", format_name="flac", sample_rate=handle.samplerate, channels=handle.channels,
                  frames=handle.frames, bit_rate=None)


def _width(fmt: OutputFormat) -> int:
    """Bytes a sample of a headerless format takes."""
    return 2 if fmt.codec == "pcm" else 1


def _ulaw_table() -> np.ndarray:
    """μ-law byte -> sample (ITU-T G.711, as ffmpeg's ``pcm_mulaw`` expands it), as float32 of 16-bit full scale."""
    u = ~np.arange(256) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (np.where(u & 0x80, 0x84 - t, t - 0x84) / 32768).astype(np.float32)


def _alaw_table() -> np.ndarray:
    """A-law byte -> sample (ITU-T G.711, as ffmpeg's ``pcm_alaw`` expands it), as float32 of 16-bit full scale."""
    a = np.arange(256) ^ 0x55
    segment = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    return (np.where(a & 0x80, t, -t) / 32768).astype(np.float32)


_G711 = {"ulaw": _ulaw_table(), "alaw": _alaw_table()}


def _raw_blocks(path: Path, fmt: OutputFormat, block_samples: int) -> Iterator[np.ndarray]:
    width = _width(fmt)
    with path.open("rb") as handle:
        while chunk := handle.read(block_samples * width):
            if fmt.codec == "pcm":
                samples = np.frombuffer(chunk, dtype="<i2", count=len(chunk) // 2)
                block = samples.astype(np.float32) * np.float32(1 / 32768)
            else:
                block = _G711[fmt.codec][np.frombuffer(chunk, dtype=np.uint8)]
            if len(block):  # a lone odd byte at the end is no sample
                yield block


@dataclass(frozen=True)
class _Mp3:
    """An mp3 as libsndfile and the MPEG frame headers see it."""

    frames: int  # libsndfile's length
    walked: int  # samples in the frames walked from the start (``_mpeg_frames``)
    to_the_end: bool  # the frames run to the end of the file (or to an ID3v1 tag there)


def _mp3(path: Path, fmt: OutputFormat) -> _Mp3 | None:
    """The mp3 as libsndfile reads it, when it reads it whole: mono at ``fmt``'s rate, with a length that covers the
    MPEG frames walked; None otherwise (ffmpeg then reads it)."""
    with _opened(path) as handle:
        if handle is None or handle.channels != 1 or handle.samplerate != fmt.sample_rate:
            return None
        walked, to_the_end = _mpeg_frames(path)
        if handle.frames + MP3_GAPLESS_FRAMES * MP3_MAX_FRAME_SAMPLES < walked:
            return None
        return _Mp3(handle.frames, walked, to_the_end)


def _mp3_samples(path: Path, fmt: OutputFormat) -> int | None:
    """An mp3's length without decoding it, for one whose frames run unbroken to its end: libsndfile's length, or
    the frames' where a header claims more than the file holds (a stream cut short). None for a file damaged
    part-way: ffmpeg counts it, resyncing past the damage as the measure's decode does."""
    mp3 = _mp3(path, fmt)
    return min(mp3.frames, mp3.walked) if mp3 is not None and mp3.to_the_end else None


def _mp3_blocks(path: Path, block_samples: int,
                resume: Callable[[int], Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """libsndfile's decode, read no further than its length: a read past it makes mpg123 decode the encoder's
    last, partial frame and print an error about it (ffmpeg drops that frame quietly)."""
    handed = 0
    try:
        with sf.SoundFile(str(path)) as handle:
            while handed < handle.frames and len(block := handle.read(block_samples, dtype="float32")):
                handed += len(block)
                yield block
        return
    except sf.SoundFileError:  # damaged frames libsndfile does not resync over: ffmpeg decodes the rest
        pass
    yield from resume(handed)


def _mpeg_frames(path: Path) -> tuple[int, bool]:
    """Samples in the MPEG audio frames that follow one another from the start (after an ID3v2 tag) up to the first
    thing that is not one (what a decoder gives, plus the Xing frame and the gapless delay and padding it drops), and
    whether that is the end of the file (or an ID3v1 tag there, or a last frame cut short)."""
    samples = 0
    frames: dict[bytes, tuple[int, int] | None] = {}  # a frame's size is its header's first 3 bytes' function
    with path.open("rb") as handle:
        handle.seek(id3_size(handle.read(10)))
        buffer, at = b"", 0
        while True:
            if len(buffer) - at < _MAX_MPEG_FRAME_BYTES:
                buffer, at = buffer[at:] + handle.read(_WALK_CHUNK), 0
            remaining = len(buffer) - at  # all there is to the end, once under _MAX_MPEG_FRAME_BYTES
            if remaining < _MPEG_HEADER_READ:
                return samples, remaining == 0
            header = buffer[at:at + 3]
            if header not in frames:
                frames[header] = mpeg_frame(buffer, at)
            frame = frames[header]
            if frame is None or frame[0] <= 0:
                return samples, remaining == _ID3V1_BYTES and buffer.startswith(b"TAG", at)
            if frame[0] > remaining:  # a stream cut inside its last frame: a decoder drops that frame
                return samples, True
            samples += frame[1]
            at += frame[0]


def _opus_samples(path: Path) -> int | None:
    """What an Ogg Opus decode gives at 48 kHz: the last complete page's granule position less the pre-skip; None
    for anything but one Opus stream of whole pages in order (ffmpeg then counts). A page cut off at the end is not
    counted, as a decode does not count it either."""
    size = path.stat().st_size
    serial: int | None = None
    pre_skip, last = 0, 0
    with path.open("rb") as handle:
        while len(header := handle.read(_OGG_PAGE_HEADER_BYTES)) == _OGG_PAGE_HEADER_BYTES:
            if header[:4] != b"OggS" or header[4] != 0:
                return None
            granule, page_serial = struct.unpack_from("<qI", header, 6)
            lacing = handle.read(header[26])
            body_at, body = handle.tell(), sum(lacing)
            if len(lacing) < header[26] or body_at + body > size:
                break
            if serial is None:
                head = handle.read(body)
                if len(head) < 19 or head[:8] != b"OpusHead":
                    return None
                serial, pre_skip = page_serial, struct.unpack_from("<H", head, 10)[0]
            elif page_serial != serial or (granule != -1 and granule < last):
                return None
            handle.seek(body_at + body)
            last = last if granule == -1 else granule
    return None if serial is None else max(0, last - pre_skip)
