"""Long recordings: plan cuts at silences, cut the pieces to send, and stitch the converted pieces back in time.

The service takes at most a few minutes per request; podcast episodes run for hours. Every step streams, so memory
stays flat for any length:

- ``plan_segments`` decodes the input once at its own rate and keeps only a 10 ms energy envelope (100 values a
  second). Each cut is the quietest point of a 200 ms smoothed envelope in the last part of the allowed length, so a
  cut lands in the middle of a pause rather than in the short gap of a stop consonant.
- Cuts lie on a 20 ms grid. 20 ms is a whole number of samples at every rate the service reads or writes (8, 16,
  22.05, 24, 32, 44.1 and 48 kHz), so a segment's bounds are sample-exact both in the input and in each converted
  piece; only the end of the last segment (the input's exact decoded length) can fall between grid points.
- ``cut_segment`` writes one segment plus ``overlap_s`` of context on each inner side.
- Both are handed the job's ``AudioInfo`` rather than asking ffprobe again: a long episode is cut into dozens of
  segments, and each cut would otherwise cost two ffprobe runs to learn what the job already knows.
- ``Stitcher`` decodes the converted pieces one after another, as each arrives in order, joins them with an
  equal-power crossfade centred on each cut, places every piece at its planned position (a piece that came back
  longer or shorter is trimmed or padded, so errors never add up), and encodes once, in one ffmpeg fed from the
  first piece on: when the last piece arrives, only it remains to stitch. ``stitch`` feeds it a list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from pipeline.audio.decode import pcm_stream, sample_rate_of
from pipeline.audio.ffmpeg import MONO_ARGS, Encoder, ReadbackEncoder, probe_format_name, run_to_file
from pipeline.audio.probe import AudioInfo
from pipeline.errors import PermanentError
from pipeline.formats import PCM_S16LE_16_RATE, OutputFormat

FRAMES_PER_S = 100  # the envelope's 10 ms frames
SMOOTH_FRAMES = 20  # 200 ms: longer than the gap of a stop consonant, shorter than a pause between phrases
GRID_FRAMES = 2  # cuts on a 20 ms grid
MIN_SEGMENT_S = 1.0  # no segment shorter than this, so a crossfade always fits
SEARCH_FRACTION = 0.25  # default search window: the last quarter of the allowed length
#: containers whose input-side seek ffmpeg makes sample-exact (checked by tests/audio/test_segments.py); others are
#: decoded from the start on every cut, which is exact but costs a decode of everything before the segment
_EXACT_SEEK_FORMATS = ("wav", "flac")


@dataclass(frozen=True)
class Segment:
    """A stretch ``[start_s, end_s)`` of the input, in seconds from its start."""

    index: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def bounds(self, rate: int, time_scale: float = 1.0) -> tuple[int, int]:
        """First and one-past-last sample at ``rate`` (after scaling time by ``time_scale``)."""
        return round(self.start_s * time_scale * rate), round(self.end_s * time_scale * rate)


def plan_segments(path: Path, *, max_segment_s: float, input_args: Sequence[str] = (),
                  search_s: float | None = None, info: AudioInfo | None = None) -> list[Segment]:
    """Split ``path`` into segments of at most ``max_segment_s``, cutting at the quietest point near each limit.

    Each cut is searched in ``[start + max_segment_s - search_s, start + max_segment_s]`` (default ``search_s`` is a
    quarter of the maximum). An input no longer than the maximum is one segment. The last segment ends at the exact
    decoded length of the input. ``info`` is what the job probed (see ``cut_segment``); without it, ffprobe is asked.
    """
    return list(iter_segments(path, max_segment_s=max_segment_s, input_args=input_args, search_s=search_s, info=info))


def iter_segments(path: Path, *, max_segment_s: float, input_args: Sequence[str] = (),
                  search_s: float | None = None, info: AudioInfo | None = None) -> Iterator[Segment]:
    """``plan_segments``' segments one by one, each as soon as the decode has gone far enough to place its end.

    A cut depends only on the envelope around its search window, unless the input ends within a second of that
    window; so each segment but the last few is known long before the whole input is decoded, and its request can
    start while the rest is planned.
    """
    if max_segment_s < 3 * MIN_SEGMENT_S:
        raise ValueError(f"max_segment_s={max_segment_s} is too short to plan segments (at least {3 * MIN_SEGMENT_S})")
    rate = _decode_rate(path, info, input_args)
    envelope = _Envelope(rate)
    max_frames = math.floor(max_segment_s * FRAMES_PER_S + 1e-9)
    search_frames = round((search_s if search_s is not None else SEARCH_FRACTION * max_segment_s) * FRAMES_PER_S)
    # frames decoded past a window's end after which the end of the input cannot change the cut (its bounds or the
    # smoothed envelope in it): more than MIN_SEGMENT_S plus half the smoothing
    settled = round(MIN_SEGMENT_S * FRAMES_PER_S) + SMOOTH_FRAMES
    start, index = 0, 0
    for _ in envelope.grow(pcm_stream(path, sample_rate=rate, input_args=input_args,
                                      expected_s=info.duration_s if info is not None else None)):
        while envelope.frames >= start + max_frames + settled:
            cut = _quietest_cut(envelope, start, start + max_frames, search_frames)
            yield Segment(index, start / FRAMES_PER_S, cut / FRAMES_PER_S)
            start, index = cut, index + 1
            envelope.forget_before(start)  # later windows start a second after it
    total_s = envelope.samples / rate
    last_allowed = math.floor((total_s - MIN_SEGMENT_S) * FRAMES_PER_S)
    while total_s - start / FRAMES_PER_S > max_segment_s:
        cut = _quietest_cut(envelope, start, min(start + max_frames, last_allowed), search_frames)
        yield Segment(index, start / FRAMES_PER_S, cut / FRAMES_PER_S)
        start, index = cut, index + 1
    yield Segment(index, start / FRAMES_PER_S, total_s)


def _quietest_cut(envelope: _Envelope, start: int, limit: int, search_frames: int) -> int:
    """The frame to cut at after ``start``: the quietest grid point of the 200 ms smoothed envelope in the search
    window that ends at ``limit`` (ties: the later cut, so fewer segments)."""
    hi = limit // GRID_FRAMES * GRID_FRAMES
    lo = max(start + round(MIN_SEGMENT_S * FRAMES_PER_S), hi - search_frames)
    lo = -(-lo // GRID_FRAMES) * GRID_FRAMES
    # smooth[i] is the mean of energy[i - 10 : i + 10], centred on the cut; lo is at least a second in
    around = envelope.window(lo - SMOOTH_FRAMES // 2, hi + SMOOTH_FRAMES // 2).astype(np.float64)
    smooth = np.convolve(around, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="valid")
    window = smooth[:hi - lo + 1:GRID_FRAMES]
    return lo + (len(window) - 1 - int(np.argmin(window[::-1]))) * GRID_FRAMES


def cut_segment(path: Path, seg: Segment, out: Path, *, file_format: str, overlap_s: float,
                input_args: Sequence[str] = (), info: AudioInfo | None = None) -> Path:
    """Write ``seg`` plus ``overlap_s`` on each side (clipped to the input) as the file to send; return its path.

    ``pcm_s16le_16``: raw 16 kHz mono s16le, suffix ``.pcm``. ``other``: 16-bit FLAC at the source's rate and channel
    count, suffix ``.flac`` -- lossless, so the service converts the same samples the plan was made on, and about
    half the upload of WAV. Bounds are sample-exact: ffmpeg trims by sample count after decoding; WAV, FLAC and raw
    inputs are first seeked to a whole second before the segment, which ffmpeg does exactly.

    The piece is up to ``seg.duration_s + 2 * overlap_s`` long: plan with the service's limit minus ``2 * overlap_s``.

    ``info`` is the job's probe of ``path`` or of the input ``path`` was prepared from: ``prepare`` and ``to_flac``
    keep the sample rate and write FLAC, so its rate holds and a FLAC written on the way is recognised by its first
    bytes. With ``info`` no ffprobe runs; without it, ffprobe is asked for the rate and container.
    """
    rate = _decode_rate(path, info, input_args)
    start, end = seg.bounds(rate)
    pad = round(overlap_s * rate)
    first, stop = max(0, start - pad), end + pad  # past the end of the input, ffmpeg simply stops
    seek_s = max(0, first // rate - 1) if _seeks_exactly(path, info, input_args) else 0
    if file_format == "pcm_s16le_16":
        out = out.with_suffix(".pcm")
        output_args = [*MONO_ARGS, "-ar", str(PCM_S16LE_16_RATE), "-c:a", "pcm_s16le", "-f", "s16le"]
    else:
        out = out.with_suffix(".flac")
        output_args = ["-c:a", "flac", "-sample_fmt", "s16"]
    trim = f"atrim=start_sample={first - seek_s * rate}:end_sample={stop - seek_s * rate}"
    done = run_to_file(path, out, input_args=input_args, output_args=["-af", trim, *output_args], seek_s=seek_s,
                       expected_s=stop / rate)
    if not done.ok:
        raise PermanentError(f"cutting segment {seg.index} failed: {done.stderr[-300:]}")
    return out


def stitch(converted: Sequence[Path], segments: Sequence[Segment], *, segment_format: OutputFormat,
           output_format: OutputFormat, out: Path, crossfade_s: float = 0.05, overlap_s: float | None = None,
           time_scale: float = 1.0) -> Path:
    """Join converted segments into ``out`` (``output_format``), encoded once, as long as the input exactly.

    ``converted[i]`` is segment ``i`` as the service returned it; see ``Stitcher``, which this feeds in one go.
    """
    if len(converted) != len(segments):
        raise ValueError(f"{len(converted)} converted pieces for {len(segments)} segments")
    with Stitcher(segments, segment_format=segment_format, output_format=output_format, out=out,
                  crossfade_s=crossfade_s, overlap_s=overlap_s, time_scale=time_scale) as stitcher:
        for piece in converted:
            stitcher.add(piece)
    return out


class Stitcher:
    """Joins converted segments into ``out`` (``output_format``) one at a time, in order, as each becomes available;
    encoded once, as long as the input exactly.

    ``add`` takes segment ``k``'s piece as the service returned it in ``segment_format``, cut with ``overlap_s`` of
    context on each inner side (default: ``crossfade_s``); the pieces must come in segment order, and all of them
    before the ``with`` block ends. Each join is an equal-power crossfade of ``crossfade_s`` centred on the cut, which
    leaves ``overlap_s - crossfade_s / 2`` of each piece's edge unused (conversion edge effects live there); every
    piece is placed at its planned position (one that came back longer or shorter is trimmed or padded, so errors
    never add up). ``time_scale`` is output seconds per input second (``1 / speed`` when the voice settings change
    the speed). With ``on_output``, the encoded output is decoded back while it is written and handed over in blocks
    of ``output_block_s`` (``ReadbackEncoder``), so a measure of it ends when the encode does. Memory holds one
    decoded block and one crossfade, whatever the length.
    """

    def __init__(self, segments: Sequence[Segment], *, segment_format: OutputFormat, output_format: OutputFormat,
                 out: Path, crossfade_s: float = 0.05, overlap_s: float | None = None, time_scale: float = 1.0,
                 on_output: Callable[[np.ndarray], None] | None = None, output_block_s: float = 2.0) -> None:
        if not segments:
            raise ValueError("no segments to stitch")
        overlap_s = crossfade_s if overlap_s is None else overlap_s
        if crossfade_s / 2 > overlap_s:
            raise ValueError(f"a {crossfade_s} s crossfade needs at least {crossfade_s / 2} s of overlap, "
                             f"not {overlap_s}")
        self.segments = list(segments)
        self.segment_format = segment_format
        self.time_scale = time_scale
        self.rate = output_format.sample_rate
        self.added = 0
        self._pad = round(overlap_s * time_scale * self.rate)
        self._half = round(crossfade_s / 2 * time_scale * self.rate)
        ramp = (np.arange(2 * self._half) + 0.5) / (2 * self._half) * (np.pi / 2)
        self._fade_in, self._fade_out = np.sin(ramp).astype(np.float32), np.cos(ramp).astype(np.float32)
        self._held = np.zeros(0, dtype=np.float32)  # the previous piece over [cut - half, cut + half)
        expected_s = self.segments[-1].end_s * time_scale
        if on_output is None:
            self._encoder: Encoder = Encoder(output_format, out, what="the stitched output", expected_s=expected_s)
        else:
            hand_over = on_output
            self._encoder = ReadbackEncoder(
                output_format, out, what="the stitched output", expected_s=expected_s,
                on_samples=lambda chunk: hand_over(np.frombuffer(chunk, dtype="<f4")),
                block_samples=round(output_block_s * self.rate))

    def __enter__(self) -> Stitcher:
        self._encoder.__enter__()
        return self

    def add(self, piece: Path) -> None:
        """Stitch the next segment's converted piece on."""
        k = self.added
        if k >= len(self.segments):
            raise ValueError(f"a piece beyond the {len(self.segments)} segments")
        start, end = self.segments[k].bounds(self.rate, self.time_scale)
        half = self._half
        lead = min(self._pad, start)  # the piece starts this many samples before its segment
        half_in = half if k > 0 else 0
        half_out = half if k < len(self.segments) - 1 else 0
        reader = _Reader(self._blocks(piece))
        try:
            reader.skip(lead - half_in)
            if half_in:
                self._encoder.write(self._held * self._fade_out + reader.read(2 * half) * self._fade_in)
            for block in reader.blocks((end - start) - half_in - half_out):
                self._encoder.write(block)
            self._held = reader.read(2 * half_out)
        finally:
            reader.close()
        self.added += 1

    def _blocks(self, piece: Path) -> Iterator[np.ndarray]:
        if self.segment_format.codec == "pcm" and self.segment_format.sample_rate == self.rate:
            return _s16le_blocks(piece)  # the service's headerless PCM at the output's rate: no decoder needed
        return pcm_stream(piece, sample_rate=self.rate, input_args=self.segment_format.ffmpeg_input_args())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and self.added < len(self.segments):
            missing = ValueError(f"the stitch ended after {self.added} of {len(self.segments)} pieces")
            self._encoder.__exit__(ValueError, missing, None)
            raise missing
        self._encoder.__exit__(exc_type, exc, tb)


class _Envelope:
    """Mean square of each 10 ms frame of a decode at ``rate``, grown block by block, and the samples counted.

    Frame ``k`` covers samples ``[k * rate // 100, (k + 1) * rate // 100)``, so frames never drift from the clock,
    even at 22.05 kHz where 10 ms is not a whole number of samples. A trailing partial frame is kept at the end.
    Frames before ``forget_before`` are dropped, so memory holds about one segment's envelope.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frames = 0  # whole frames so far
        self.samples = 0  # samples consumed so far (all of them, once ``grow`` is done)
        self._parts: list[np.ndarray] = []
        self._first = 0  # the frame self._parts starts with
        self._carry = np.zeros(0)

    def grow(self, blocks: Iterator[np.ndarray]) -> Iterator[None]:
        """Consume ``blocks``, yielding after each one."""
        carry_start = 0  # index of self._carry[0] in the whole input
        for block in blocks:
            squares = np.concatenate([self._carry, block.astype(np.float64) ** 2])
            end = carry_start + len(squares)
            last_edge = ((end + 1) * FRAMES_PER_S - 1) // self.rate  # the last frame edge inside what has been read
            if last_edge > self.frames:
                edges = np.arange(self.frames, last_edge + 1) * self.rate // FRAMES_PER_S - carry_start
                sums = np.add.reduceat(squares[:edges[-1]], edges[:-1])
                self._parts.append((sums / np.diff(edges)).astype(np.float32))
                squares = squares[edges[-1]:]
                carry_start += int(edges[-1])
                self.frames = last_edge
            self._carry = squares
            self.samples = carry_start + len(squares)
            yield
        if len(self._carry):
            self._parts.append(np.array([self._carry.mean()], dtype=np.float32))
            self._carry = np.zeros(0)

    def window(self, first: int, stop: int) -> np.ndarray:
        """Frames ``[first, stop)`` (none before the last ``forget_before``)."""
        if first < self._first:
            raise ValueError(f"frame {first} was dropped (the envelope starts at {self._first})")
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        held = self._parts[0] if self._parts else np.zeros(0, dtype=np.float32)
        return held[first - self._first:stop - self._first]

    def forget_before(self, frame: int) -> None:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        if self._parts and frame > self._first:
            self._parts = [self._parts[0][frame - self._first:].copy()]
            self._first = frame


def _s16le_blocks(path: Path, block_samples: int = 1 << 15) -> Iterator[np.ndarray]:
    """Raw mono s16le as float32 blocks, the values ffmpeg decodes it to (``x / 32768``); a trailing odd byte, half a
    sample, is dropped as ffmpeg drops it."""
    with path.open("rb") as handle:
        while len(chunk := handle.read(2 * block_samples)) >= 2:
            whole = len(chunk) // 2 * 2
            yield np.frombuffer(chunk[:whole], dtype="<i2").astype(np.float32) / np.float32(32768)


def _decode_rate(path: Path, info: AudioInfo | None, input_args: Sequence[str]) -> int:
    """The rate ``path`` decodes at: ``-ar`` for headerless input, else the probed rate, else ffprobe's answer."""
    if "-ar" in input_args or info is None or info.sample_rate <= 0:
        return sample_rate_of(path, input_args=input_args)
    return info.sample_rate


def _seeks_exactly(path: Path, info: AudioInfo | None, input_args: Sequence[str]) -> bool:
    """Whether an input-side ``-ss`` lands on the exact sample in ``path`` (raw input, WAV or FLAC)."""
    if input_args:
        return True
    if info is None:
        return probe_format_name(path) in _EXACT_SEEK_FORMATS
    return info.format_name in _EXACT_SEEK_FORMATS or _starts_with_flac_marker(path)


def _starts_with_flac_marker(path: Path) -> bool:
    """A FLAC that ``prepare`` or ``to_flac`` wrote from another container: ffmpeg's FLAC starts with ``fLaC``."""
    with path.open("rb") as handle:
        return handle.read(4) == b"fLaC"


class _Reader:
    """Exact sample counts out of a stream of blocks; past the end of the stream it reads zeros."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._buffer = np.zeros(0, dtype=np.float32)

    def _next(self) -> np.ndarray | None:
        if len(self._buffer):
            block, self._buffer = self._buffer, np.zeros(0, dtype=np.float32)
            return block
        return next(self._blocks, None)

    def blocks(self, n: int) -> Iterator[np.ndarray]:
        """Yield the next ``n`` samples in blocks, padded with zeros if the stream ends first."""
        while n > 0:
            block = self._next()
            if block is None:
                yield np.zeros(n, dtype=np.float32)
                return
            if len(block) > n:
                block, self._buffer = block[:n], block[n:]
            n -= len(block)
            yield block

    def read(self, n: int) -> np.ndarray:
        parts = list(self.blocks(n))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def skip(self, n: int) -> None:
        for _ in self.blocks(n):
            pass

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()  # stops the decoder if the piece was longer than needed
