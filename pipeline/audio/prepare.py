"""The file the service is sent, and the proof that the input decodes to its end before any credit is spent.

A truncated upload that ffprobe still accepts would otherwise be paid for and come back short, so every non-raw input
is decoded in full here. What is sent changes only where it must: raw PCM for ``pcm_s16le_16``, a header for raw
input, a mono downmix for more than two channels. Everything else goes as uploaded.

Messages name the input by ``label`` (the caller passes the S3 URI), never by the temporary path it was downloaded to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from pipeline.audio.ffmpeg import MONO_ARGS, Decoder, run_to_file, tail
from pipeline.audio.probe import AudioInfo
from pipeline.errors import InputError
from pipeline.formats import PCM_S16LE_16_RATE

#: a decode may come up this much shorter than the header's duration before the file counts as cut off; mp3 headers
#: count encoder delay and padding (up to ~0.1 s at 22.05 kHz) that the decoder drops
TRUNCATION_ALLOWANCE_S = 0.25


def prepare(path: Path, info: AudioInfo, file_format: str, workdir: Path, *, label: str | None = None) -> Path:
    """The file to send for ``file_format``, written into ``workdir`` when it has to differ from ``path``.

    - ``pcm_s16le_16``: raw 16 kHz mono s16le (a raw input is used as is; anything else is transcoded).
    - ``other``: the input as is, except that more than two channels are downmixed to mono and raw PCM gets a header;
      both are written as 16-bit FLAC at the source rate (lossless, about half the upload of WAV).

    Every non-raw input is decoded to the end: ffmpeg errors, or a decode clearly shorter than the header's duration
    (a truncated file that ffprobe still accepts), raise ``InputError(reason="corrupt_audio")``.
    """
    name = label or str(path)
    if file_format == "pcm_s16le_16":
        if info.is_raw_pcm:
            return path
        out = workdir / f"{path.stem}.prepared.pcm"
        errors = _to_file(path, out, input_args=info.input_args(),
                          output_args=[*MONO_ARGS, "-ar", str(PCM_S16LE_16_RATE), "-c:a", "pcm_s16le", "-f", "s16le"])
        _check_decode(info, errors, out.stat().st_size / 2 / PCM_S16LE_16_RATE, name, path)
        return out
    if info.channels > 2 or info.is_raw_pcm:
        out = workdir / f"{path.stem}.prepared.flac"
        channels = MONO_ARGS if info.channels > 2 else ()
        errors = _to_file(path, out, input_args=info.input_args(),
                          output_args=[*channels, "-c:a", "flac", "-sample_fmt", "s16"])
        _check_decode(info, errors, sf.info(str(out)).duration, name, path)
        return out
    with Decoder(path, input_args=(), output_args=[*MONO_ARGS, "-c:a", "pcm_s16le", "-f", "s16le"]) as decoder:
        decoded_bytes = 0
        while chunk := decoder.read(1 << 20):
            decoded_bytes += len(chunk)
        errors = decoder.finish()
    _check_decode(info, errors, decoded_bytes / 2 / info.sample_rate, name, path)
    return path


def to_flac(path: Path, out: Path, *, input_args: Sequence[str] = ()) -> Path:
    """A lossless 16-bit FLAC copy (same rate and channels): exact and fast to seek in, unlike mp3 or AAC."""
    _to_file(path, out, input_args=input_args, output_args=["-c:a", "flac", "-sample_fmt", "s16"])
    return out


def resample_mono(path: Path, out: Path, *, sample_rate: int) -> Path:
    """``path`` as mono at ``sample_rate``, in the container ``out``'s suffix names (the demo's recorded samples)."""
    _to_file(path, out, output_args=["-ar", str(sample_rate), "-ac", "1"])
    return out


def content_type_of(path: Path) -> str:
    """The Content-Type to upload a prepared file with, by its suffix (raw PCM and unknowns: octet-stream)."""
    return {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
            ".opus": "audio/ogg", ".m4a": "audio/mp4"}.get(path.suffix.lower(), "application/octet-stream")


def _to_file(path: Path, out: Path, *, input_args: Sequence[str] = (), output_args: Sequence[str]) -> str:
    """Run ffmpeg into ``out``; return what it reported as errors; raise ``corrupt_audio`` if it gave up."""
    done = run_to_file(path, out, input_args=input_args, output_args=output_args)
    errors = done.stderr.strip()
    if not done.ok:
        raise InputError(f"{path.name} cannot be decoded: ffmpeg failed ({tail(errors, path)})",
                         reason="corrupt_audio")
    return errors


def _check_decode(info: AudioInfo, errors: str, decoded_s: float, label: str, path: Path) -> None:
    if errors:
        raise InputError(f"input {label} is damaged: ffmpeg reported decode errors ({tail(errors, path)}); "
                         f"re-export or re-upload it", reason="corrupt_audio")
    if not info.duration_estimated and decoded_s < info.duration_s - TRUNCATION_ALLOWANCE_S:
        raise InputError(f"input {label} is cut off: its header promises {info.duration_s:.2f} s but only "
                         f"{decoded_s:.2f} s decode; upload the complete file", reason="corrupt_audio")
