"""Upload bytes to mono float32 samples at the working rate.

``file_format=pcm_s16le_16`` is taken as raw 16-bit little-endian mono PCM at 16 kHz; ``other`` is a WAV file read in
process, or anything ffmpeg decodes (read from a temporary file, because some containers such as MP4 need a seekable
input). Decoding stops a second past the duration limit, so an over-long upload never fills memory. Problems are the
vendor's 400s: ``invalid_audio`` (empty, undecodable, odd byte count) and ``audio_too_long``, both with
``param: audio``.
"""

from __future__ import annotations

import asyncio
import io
import tempfile

import numpy as np
import soundfile as sf
import soxr

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


def decode_wav(data: bytes, *, max_seconds: float) -> np.ndarray | None:
    """A mono RIFF/WAVE upload read in process (libsndfile, then soxr to the working rate), up to ``max_seconds`` + 1 s;
    None when it is not a WAV file libsndfile reads, so that ffmpeg decides. It saves the server an ffmpeg process
    (about 0.07 CPU-s, mostly start-up) on the most common upload, which matters under load tests."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with sf.SoundFile(io.BytesIO(data)) as wav:
            if wav.channels != 1:  # ffmpeg's downmix (its levels, its clipping guard) stays the one way to mono
                return None
            frames = min(wav.frames, int((max_seconds + 1.0) * wav.samplerate))
            mono, rate = wav.read(frames, dtype="float32"), wav.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return None
    if rate == WORK_RATE_HZ:
        return np.ascontiguousarray(mono)
    return soxr.resample(mono, rate, WORK_RATE_HZ).astype(np.float32)


async def decode_upload(data: bytes, file_format: str, *, max_seconds: float) -> np.ndarray:
    """The upload as float32 samples at 16 kHz; a ``Problem`` if it is empty, undecodable or too long."""
    if not data:
        raise invalid_audio("The audio file is empty.")
    if file_format == "pcm_s16le_16":
        samples = decode_pcm_s16le(data)
        rate = PCM_S16LE_16_RATE
    else:
        wav = decode_wav(data, max_seconds=max_seconds)
        samples = wav if wav is not None else await decode_with_ffmpeg(data, max_seconds=max_seconds)
        rate = WORK_RATE_HZ
    if not len(samples):
        raise invalid_audio("The audio contains no samples.")
    if len(samples) > max_seconds * rate:
        raise too_long_error(len(samples) / rate, max_seconds)
    return samples
