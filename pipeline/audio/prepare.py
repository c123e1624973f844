"""The file the service is sent, and the proof that the input decodes to its end before any credit is spent.

A truncated upload that ffprobe still accepts would otherwise be paid for and come back short, so every non-raw input
is decoded in full here, and that one decode is also what counts the input's length (a header that lies cannot
shrink the bill or slip past ``STS_MAX_INPUT_SECONDS``). What is sent changes only where it must: raw PCM for
``pcm_s16le_16``, a header for raw input, a mono downmix for more than two channels. Everything else goes as uploaded.

Messages name the input by ``label`` (the caller passes the S3 URI), never by the temporary path it was downloaded to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from pipeline.audio import native
from pipeline.audio.ffmpeg import MONO_ARGS, Decoder, run_to_file, tail
from pipeline.audio.probe import AudioInfo
from pipeline.errors import InputError
from pipeline.formats import PCM_S16LE_16_RATE

#: a decode may come up this much shorter than the header's duration before the file counts as cut off; mp3 headers
#: count encoder delay and padding (up to ~0.1 s at 22.05 kHz) that the decoder drops
TRUNCATION_ALLOWANCE_S = 0.25
#: the rate an input is counted at when its header names none
COUNT_RATE = 48000


def prepare(path: Path, info: AudioInfo, file_format: str, workdir: Path, *, label: str | None = None) -> Path:
    """The file to send for ``file_format``, written into ``workdir`` when it has to differ from ``path``.

    - ``pcm_s16le_16``: raw 16 kHz mono s16le (a raw input is used as is; anything else is transcoded).
    - ``other``: the input as is, except that more than two channels are downmixed to mono and raw PCM gets a header;
      both are written as 16-bit FLAC at the source rate (lossless, about half the upload of WAV).

    Every non-raw input is decoded to the end, once (a WAV in process, see ``pipeline.audio.native``; anything else
    by ffmpeg), and that decode **counts** its length: ``info.duration_s``
    becomes the decoded length (see ``pipeline.audio.probe``). With a limit armed by ``check_limits`` the decode stops
    at the limit + 1 s and the input is refused ``too_long``, whatever its header says. ffmpeg errors, or a decode
    clearly shorter than the header's duration (a truncated file that ffprobe still accepts), raise
    ``InputError(reason="corrupt_audio")``.
    """
    name = label or str(path)
    stop_s = info.count_limit_s()
    expected_s = stop_s if stop_s is not None else (info.duration_s or None)
    stop = ["-t", f"{stop_s:g}"] if stop_s is not None else []
    if file_format == "pcm_s16le_16":
        if info.is_raw_pcm:
            info.record_count(info.size_bytes / 2 / PCM_S16LE_16_RATE, label=name)
            return path
        out = workdir / f"{path.stem}.prepared.pcm"
        errors = _to_file(path, out, input_args=info.input_args(), expected_s=expected_s,
                          output_args=[*MONO_ARGS, "-ar", str(PCM_S16LE_16_RATE), "-c:a", "pcm_s16le", *stop,
                                       "-f", "s16le"])
        _check_decode(info, errors, out.stat().st_size / 2 / PCM_S16LE_16_RATE, name, path)
        return out
    if info.channels > 2 or info.is_raw_pcm:
        out = workdir / f"{path.stem}.prepared.flac"
        channels = MONO_ARGS if info.channels > 2 else ()
        errors = _to_file(path, out, input_args=info.input_args(), expected_s=expected_s,
                          output_args=[*channels, "-c:a", "flac", "-sample_fmt", "s16", *stop])
        written = sf.info(str(out))
        _check_decode(info, errors, written.frames / written.samplerate, name, path)
        return out
    # sent as is: decode it only to count and to check it (mono, at the rate the header claims, so that a header
    # that lies about the rate cannot shrink the count either); a WAV whose header agrees with the file is counted
    # in process (``native``: its samples are its bytes), anything else by ffmpeg
    counted_s = native.count_wav_s(path, stop_s=stop_s) if info.format_name == "wav" else None
    if counted_s is not None:
        _check_decode(info, "", counted_s, name, path)
        return path
    rate = info.sample_rate if info.sample_rate > 0 else COUNT_RATE
    stop_bytes = None if stop_s is None else 2 * math.ceil(stop_s * rate)
    with Decoder(path, input_args=(), output_args=[*MONO_ARGS, "-ar", str(rate), "-c:a", "pcm_s16le", "-f", "s16le"],
                 expected_s=expected_s) as decoder:
        decoded_bytes = 0
        while chunk := decoder.read(1 << 20 if stop_bytes is None else min(1 << 20, stop_bytes - decoded_bytes)):
            decoded_bytes += len(chunk)
            if stop_bytes is not None and decoded_bytes >= stop_bytes:
                break  # over the limit: the rest is never decoded (leaving the block kills ffmpeg)
        over = stop_bytes is not None and decoded_bytes >= stop_bytes
        errors = "" if over else decoder.finish()
    _check_decode(info, errors, decoded_bytes / 2 / rate, name, path)
    return path


def to_flac(path: Path, out: Path, *, input_args: Sequence[str] = (), expected_s: float | None = None) -> Path:
    """A lossless 16-bit FLAC copy (same rate and channels): exact and fast to seek in, unlike mp3 or AAC."""
    _to_file(path, out, input_args=input_args, output_args=["-c:a", "flac", "-sample_fmt", "s16"],
             expected_s=expected_s)
    return out


def resample_mono(path: Path, out: Path, *, sample_rate: int) -> Path:
    """``path`` as mono at ``sample_rate``, in the container ``out``'s suffix names (the demo's recorded samples)."""
    _to_file(path, out, output_args=["-ar", str(sample_rate), "-ac", "1"])
    return out


def content_type_of(path: Path) -> str:
    """The Content-Type to upload a prepared file with, by its suffix (raw PCM and unknowns: octet-stream)."""
    return {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
            ".opus": "audio/ogg", ".m4a": "audio/mp4"}.get(path.suffix.lower(), "application/octet-stream")


def _to_file(path: Path, out: Path, *, input_args: Sequence[str] = (), output_args: Sequence[str],
             expected_s: float | None = None) -> str:
    """Run ffmpeg into ``out``; return what it reported as errors; raise ``corrupt_audio`` if it gave up."""
    done = run_to_file(path, out, input_args=input_args, output_args=output_args, expected_s=expected_s)
    errors = done.stderr.strip()
    if not done.ok:
        raise InputError(f"{path.name} cannot be decoded: ffmpeg failed ({tail(errors, path)})",
                         reason="corrupt_audio")
    return errors


def _check_decode(info: AudioInfo, errors: str, decoded_s: float, label: str, path: Path) -> None:
    """Refuse a damaged or cut-off decode, else make ``decoded_s`` the input's length (``too_long`` if over)."""
    if info.max_seconds is not None and decoded_s > info.max_seconds:
        info.record_count(decoded_s, label=label)  # too_long, whatever the header says
    if errors:
        raise InputError(f"input {label} is damaged: ffmpeg reported decode errors ({tail(errors, path)}); "
                         f"re-export or re-upload it", reason="corrupt_audio")
    claimed = info.header_duration_s
    if not info.duration_estimated and claimed is not None and decoded_s < claimed - TRUNCATION_ALLOWANCE_S:
        raise InputError(f"input {label} is cut off: its header promises {claimed:.2f} s but only "
                         f"{decoded_s:.2f} s decode; upload the complete file", reason="corrupt_audio")
    info.record_count(decoded_s, label=label)
