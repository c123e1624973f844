"""Decoded samples in bounded memory: quality checks, the segment planner and the stitcher all read audio this way.

An output can be hours long, so samples arrive as blocks (from an ffmpeg pipe, or read in process) and are never held
whole. A caller that wants a whole clip concatenates the blocks itself, knowing it is short.

An output's length and its samples for the quality measure (``output_duration_s``, ``output_blocks``) are read in
process where ``pipeline.audio.native`` can (headerless formats, mp3; an Opus length), with no ffmpeg process; the
same figures as ffmpeg's, which reads everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.audio import native
from pipeline.audio.ffmpeg import MONO_ARGS, Decoder, probe_sample_rate
from pipeline.formats import OutputFormat


def sample_rate_of(path: Path, *, input_args: Sequence[str] = ()) -> int:
    """The rate ffmpeg decodes ``path`` at: ``-ar`` from ``input_args`` for headerless files, else ffprobe's.

    Callers that already hold an ``AudioInfo`` for ``path`` use its ``sample_rate`` instead of asking again.
    """
    args = list(input_args)
    if "-ar" in args:
        return int(args[args.index("-ar") + 1])
    return probe_sample_rate(path)


def pcm_stream(path: Path, *, sample_rate: int, input_args: Sequence[str] = (), block_s: float = 10.0,
               expected_s: float | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``block_s`` seconds (the last one shorter) at ``sample_rate``; memory stays flat.

    Several channels are mixed down to their mean (5.1 by ffmpeg's downmix matrix, normalised to unity gain).

    Blocks are read-only views of ffmpeg's output. A decode that ffmpeg abandons raises
    ``InputError(reason="corrupt_audio")``; errors it recovers from are tolerated here (``prepare`` is the strict
    check). ``expected_s`` is about how long it is, for the decoder's timeout (default: from the size of a raw file,
    else the ceiling); a consumer slower than real time past it ends in ``decode_timeout``.
    """
    block_bytes = 4 * max(1, round(block_s * sample_rate))
    output_args = [*MONO_ARGS, "-ar", str(sample_rate), "-c:a", "pcm_f32le", "-f", "f32le"]
    if expected_s is None:
        expected_s = _raw_seconds(path, input_args)
    with Decoder(path, input_args=input_args, output_args=output_args, expected_s=expected_s) as decoder:
        while chunk := decoder.read(block_bytes):
            yield np.frombuffer(chunk, dtype="<f4")
        decoder.finish()


def duration_s(path: Path, *, input_args: Sequence[str] = (), expected_s: float | None = None) -> float:
    """The decoded duration, exact to the sample: the file is decoded at its own rate and its samples counted."""
    rate = sample_rate_of(path, input_args=input_args)
    return _decoded_samples(path, rate=rate, input_args=input_args, expected_s=expected_s) / rate


def output_duration_s(path: Path, fmt: OutputFormat) -> float:
    """The length of an output in ``fmt``, counted as ``quality.measure`` counts it (samples at ``fmt``'s rate).

    For a check on every attempt that needs only the length: no ffprobe, none of the loudness work, and no process
    at all where ``native.output_samples`` counts it (headerless: the byte count; mp3: its frames, no decode;
    opus: the last Ogg page). ``InputError`` for a file that is not audio in ``fmt``.
    """
    samples = native.output_samples(path, fmt)
    if samples is None:
        samples = _decoded_samples(path, rate=fmt.sample_rate, input_args=fmt.ffmpeg_input_args(),
                                   expected_s=nominal_seconds(path, fmt))
    return samples / fmt.sample_rate


def output_blocks(path: Path, fmt: OutputFormat, *, block_s: float,
                  expected_s: float | None = None) -> Iterator[np.ndarray]:
    """An output's samples as ``pcm_stream`` gives them (mono float32 at ``fmt``'s rate, blocks of ``block_s``),
    decoded in process where ``native.output_blocks`` can (headerless, mp3), else by ffmpeg; a decode libsndfile
    gives up part-way is finished by ffmpeg. ``expected_s`` is for ffmpeg's timeout (see ``pcm_stream``)."""

    def by_ffmpeg(skip: int) -> Iterator[np.ndarray]:
        blocks = pcm_stream(path, sample_rate=fmt.sample_rate, input_args=fmt.ffmpeg_input_args(), block_s=block_s,
                            expected_s=expected_s)
        for block in blocks:
            if skip < len(block):
                yield block[skip:]
            skip = max(0, skip - len(block))

    blocks = native.output_blocks(path, fmt, block_samples=max(1, round(block_s * fmt.sample_rate)),
                                  resume=by_ffmpeg)
    return by_ffmpeg(0) if blocks is None else blocks


def nominal_seconds(path: Path, fmt: OutputFormat) -> float | None:
    """About how long a file in ``fmt`` is by its size: exact for raw formats, the nominal bitrate for mp3/opus."""
    size = path.stat().st_size
    if fmt.headerless:
        return size / (fmt.sample_rate * (2 if fmt.codec == "pcm" else 1))
    return size * 8 / (fmt.bitrate_kbps * 1000) if fmt.bitrate_kbps else None


def _raw_seconds(path: Path, input_args: Sequence[str]) -> float | None:
    """A declared raw file's length by its size (``-f``, ``-ar`` in ``input_args``); None for containers."""
    args = list(input_args)
    if "-f" not in args or "-ar" not in args:
        return None
    width = {"s16le": 2, "f32le": 4}.get(args[args.index("-f") + 1], 1)
    channels = int(args[args.index("-ac") + 1]) if "-ac" in args else 1
    return path.stat().st_size / (width * channels * int(args[args.index("-ar") + 1]))


def _decoded_samples(path: Path, *, rate: int, input_args: Sequence[str], expected_s: float | None = None) -> int:
    if expected_s is None:
        expected_s = _raw_seconds(path, input_args)
    output_args = [*MONO_ARGS, "-ar", str(rate), "-c:a", "pcm_s16le", "-f", "s16le"]
    decoded_bytes = 0
    with Decoder(path, input_args=input_args, output_args=output_args, expected_s=expected_s) as decoder:
        while chunk := decoder.read(1 << 20):
            decoded_bytes += len(chunk)
        decoder.finish()
    return decoded_bytes // 2
