"""Upload bytes to mono float32 samples at the working rate.

``file_format=pcm_s16le_16`` is taken as raw 16-bit little-endian mono PCM at 16 kHz; ``other`` is anything ffmpeg
decodes (read from a temporary file, because some containers such as MP4 need a seekable input). Decoding stops a
second past the duration limit, so an over-long upload never fills memory. Problems are the vendor's 400s:
``invalid_audio`` (empty, undecodable, odd byte count) and ``audio_too_long``, both with ``param: audio``.
"""

from __future__ import annotations

import asyncio
import tempfile

import numpy as np

from pipeline.formats import PCM_S16LE_16_RATE
from pipeline.offline.dsp import WORK_RATE_HZ
from pipeline.offline.problems import Problem

_STDERR_TAIL_CHARS = 300


def too_long_error(seconds: float, max_seconds: float) -> Problem:
    return Problem("audio_too_long", f"Audio is at least {seconds:.1f} s long; the limit is {max_seconds:g} s per "
                   f"request. Split the recording into shorter parts and stitch the outputs.", param="audio")


def invalid_audio(message: str) -> Problem:
    return Problem("invalid_audio", message, param="audio")


def decode_pcm_s16le(data: bytes) -> np.ndarray:
    """Raw 16 kHz s16le mono to float32 in [-1, 1)."""
    if len(data) % 2:
        raise invalid_audio(f"file_format=pcm_s16le_16 needs 16-bit samples, but the audio has an odd number of "
                            f"bytes ({len(data)}).")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def decode_with_ffmpeg(data: bytes, *, max_seconds: float) -> np.ndarray:
    """Any format ffmpeg reads, downmixed to mono and resampled to the working rate."""
    with tempfile.NamedTemporaryFile(prefix="sts-upload-", suffix=".bin") as upload:
        upload.write(data)
        upload.flush()
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", upload.name, "-map", "0:a:0",
            "-ac", "1", "-ar", str(WORK_RATE_HZ), "-t", f"{max_seconds + 1.0:.3f}", "-f", "f32le", "pipe:1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await proc.communicate()
    if proc.returncode != 0 or not stdout:
        reason = stderr.decode("utf-8", "replace").strip().replace(upload.name, "<upload>")[-_STDERR_TAIL_CHARS:]
        raise invalid_audio(f"The audio could not be decoded ({reason or 'no audio stream'}). Send a file in a "
                            f"common audio format, or raw 16 kHz s16le with file_format=pcm_s16le_16.")
    return np.frombuffer(stdout[:len(stdout) - len(stdout) % 4], dtype="<f4").copy()


async def decode_upload(data: bytes, file_format: str, *, max_seconds: float) -> np.ndarray:
    """The upload as float32 samples at 16 kHz; a ``Problem`` if it is empty, undecodable or too long."""
    if not data:
        raise invalid_audio("The audio file is empty.")
    if file_format == "pcm_s16le_16":
        samples = decode_pcm_s16le(data)
        rate = PCM_S16LE_16_RATE
    else:
        samples = await decode_with_ffmpeg(data, max_seconds=max_seconds)
        rate = WORK_RATE_HZ
    if not len(samples):
        raise invalid_audio("The audio contains no samples.")
    if len(samples) > max_seconds * rate:
        raise too_long_error(len(samples) / rate, max_seconds)
    return samples
