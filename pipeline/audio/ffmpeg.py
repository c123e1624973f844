"""Audio files in and out: probe an input, prepare it for the service, and decode through ffmpeg in bounded memory.

Everything runs ffmpeg/ffprobe as subprocesses and reads their output as a stream. pydub's ``AudioSegment`` would
load a whole file into memory: fine for a clip, wrong for a three-hour episode.

Messages name the input by ``label`` (the caller passes the S3 URI), never by the temporary path it was downloaded to.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf

from pipeline.errors import InputError
from pipeline.formats import PCM_S16LE_16_RATE, OutputFormat

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: ffmpeg input arguments for raw 16 kHz mono s16le (``file_format=pcm_s16le_16``)
PCM_S16LE_16_INPUT_ARGS = ("-f", "s16le", "-ar", str(PCM_S16LE_16_RATE), "-ac", "1")
#: a decode may come up this much shorter than the header's duration before the file counts as cut off; mp3 headers
#: count encoder delay and padding (up to ~0.1 s at 22.05 kHz) that the decoder drops
TRUNCATION_ALLOWANCE_S = 0.25
#: the first bytes of containers that can never be raw PCM; a ``.pcm`` upload that starts with one is probed instead
_CONTAINER_MAGIC = (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3", b"caff", b"wvpk")
_STDERR_TAIL_CHARS = 400
#: downmix to mono with the mix normalised to unity gain: without ``rematrix_maxval`` ffmpeg sums stereo at 0.707 per
#: channel into a float output, and 5.1 at up to 3.4x, which clips loud recordings
MONO_ARGS = ("-ac", "1", "-rematrix_maxval", "1.0")


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe (or, for raw PCM, the file size) says about an input."""

    duration_s: float
    codec: str
    sample_rate: int
    channels: int
    format_name: str
    size_bytes: int
    bit_rate: int | None
    #: ffprobe guessed the duration from the bitrate (mp3 without a Xing header, ADTS AAC): it may be off, and a
    #: truncated file cannot be told from a short one
    duration_estimated: bool = False

    @property
    def is_raw_pcm(self) -> bool:
        return self.format_name == "s16le"

    def input_args(self) -> list[str]:
        """The ffmpeg arguments that go before ``-i`` to read this input (raw PCM has no header to read)."""
        return list(PCM_S16LE_16_INPUT_ARGS) if self.is_raw_pcm else []


def probe(path: Path, *, file_format: str = "other", label: str | None = None) -> AudioInfo:
    """Describe an input; ``InputError`` (empty_input, not_audio, corrupt_audio, no_duration) if it is unusable.

    ``file_format="pcm_s16le_16"`` declares the file raw 16 kHz mono s16le: its duration comes from its size. A file
    declared raw that starts with a container signature (RIFF, fLaC, OggS, ID3, ...) is probed like any other, since
    reading a WAV header as samples would put a click at the start and get the length wrong.
    """
    name = label or str(path)
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"input {name} does not exist", reason="missing_input") from None
    if size_bytes == 0:
        raise InputError(f"input {name} is empty (0 bytes): upload the recording again", reason="empty_input")
    if file_format == "pcm_s16le_16" and not _has_container_magic(path):
        return _raw_pcm_info(size_bytes, name)
    proc = subprocess.run([FFPROBE, "-v", "warning", "-print_format", "json", "-show_format", "-show_streams",
                           "-i", str(path)], capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    data = json.loads(proc.stdout or b"{}") if proc.returncode == 0 else {}
    fmt = data.get("format") or {}
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if proc.returncode != 0:
        raise InputError(f"input {name} is not audio: ffprobe cannot read it ({_tail(stderr, path)}); "
                         f"upload a WAV, FLAC, MP3, Ogg or M4A file", reason="not_audio")
    if audio is None:
        looks_like = fmt.get("format_name") or "unknown data"
        raise InputError(f"input {name} is not audio: ffprobe found no audio stream (it looks like {looks_like})",
                         reason="not_audio")
    duration = _float(audio.get("duration"))
    if duration is None:
        duration = _float(fmt.get("duration"))
    if duration is None:  # no header says (a streamed WAV, raw ADTS): count the samples instead
        duration = _decoded_duration_or_none(path)
    if duration is None:
        raise InputError(f"input {name}: neither ffprobe nor a full decode can tell its duration "
                         f"({fmt.get('format_name')}, {audio.get('codec_name')}); re-encode it as WAV or FLAC",
                         reason="no_duration")
    if duration == 0.0:
        raise InputError(f"input {name} holds no audio ({fmt.get('format_name')} with 0 samples): upload the "
                         f"recording again", reason="empty_input")
    bit_rate = audio.get("bit_rate") or fmt.get("bit_rate")
    return AudioInfo(
        duration_s=duration, codec=str(audio.get("codec_name")), sample_rate=int(audio.get("sample_rate") or 0),
        channels=int(audio.get("channels") or 0), format_name=str(fmt.get("format_name")), size_bytes=size_bytes,
        bit_rate=int(bit_rate) if bit_rate else None,
        duration_estimated="Estimating duration from bitrate" in stderr)


def check_limits(info: AudioInfo, *, max_bytes: int, max_seconds: float, label: str) -> None:
    """``InputError`` (too_large / too_long) if the input is over a configured limit."""
    if info.size_bytes > max_bytes:
        raise InputError(f"input {label} is {info.size_bytes} bytes, over the limit of {max_bytes} bytes "
                         f"(STS_MAX_INPUT_BYTES); compress it or split it", reason="too_large")
    if info.duration_s > max_seconds:
        raise InputError(f"input {label} is {info.duration_s:.1f} s long, over the limit of {max_seconds:g} s "
                         f"(STS_MAX_INPUT_SECONDS); split the recording", reason="too_long")


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
        errors = _ffmpeg_to_file(path, out, input_args=info.input_args(),
                                 output_args=[*MONO_ARGS, "-ar", str(PCM_S16LE_16_RATE), "-c:a", "pcm_s16le",
                                              "-f", "s16le"])
        _check_decode(info, errors, out.stat().st_size / 2 / PCM_S16LE_16_RATE, name, path)
        return out
    if info.channels > 2 or info.is_raw_pcm:
        out = workdir / f"{path.stem}.prepared.flac"
        channels = MONO_ARGS if info.channels > 2 else ()
        errors = _ffmpeg_to_file(path, out, input_args=info.input_args(),
                                 output_args=[*channels, "-c:a", "flac", "-sample_fmt", "s16"])
        _check_decode(info, errors, sf.info(str(out)).duration, name, path)
        return out
    with _Decoder(path, input_args=(), output_args=[*MONO_ARGS, "-c:a", "pcm_s16le", "-f", "s16le"]) as decoder:
        decoded_bytes = 0
        while chunk := decoder.read(1 << 20):
            decoded_bytes += len(chunk)
        errors = decoder.finish()
    _check_decode(info, errors, decoded_bytes / 2 / info.sample_rate, name, path)
    return path


def to_flac(path: Path, out: Path, *, input_args: Sequence[str] = ()) -> Path:
    """A lossless 16-bit FLAC copy (same rate and channels): exact and fast to seek in, unlike mp3 or AAC."""
    _ffmpeg_to_file(path, out, input_args=input_args, output_args=["-c:a", "flac", "-sample_fmt", "s16"])
    return out


def content_type_of(path: Path) -> str:
    """The Content-Type to upload a prepared file with, by its suffix (raw PCM and unknowns: octet-stream)."""
    return {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
            ".opus": "audio/ogg", ".m4a": "audio/mp4"}.get(path.suffix.lower(), "application/octet-stream")


def sample_rate_of(path: Path, *, input_args: Sequence[str] = ()) -> int:
    """The rate ffmpeg decodes ``path`` at: ``-ar`` from ``input_args`` for headerless files, else ffprobe's."""
    args = list(input_args)
    if "-ar" in args:
        return int(args[args.index("-ar") + 1])
    proc = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                           "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=False)
    try:
        return int(proc.stdout.strip())
    except ValueError:
        raise InputError(f"{path.name} has no readable audio stream ({_tail(proc.stderr, path)})",
                         reason="not_audio") from None


def decode_mono(path: Path, *, sample_rate: int, input_args: Sequence[str] = ()) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``. For short clips; use ``pcm_stream`` for anything long."""
    blocks = list(pcm_stream(path, sample_rate=sample_rate, input_args=input_args))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def pcm_stream(path: Path, *, sample_rate: int, input_args: Sequence[str] = (), block_s: float = 10.0
               ) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``block_s`` seconds (the last one shorter) at ``sample_rate``; memory stays flat.

    Several channels are mixed down to their mean (5.1 by ffmpeg's downmix matrix, normalised to unity gain).

    Blocks are read-only views of ffmpeg's output. A decode that ffmpeg abandons raises
    ``InputError(reason="corrupt_audio")``; errors it recovers from are tolerated here (``prepare`` is the strict
    check).
    """
    block_bytes = 4 * max(1, round(block_s * sample_rate))
    output_args = [*MONO_ARGS, "-ar", str(sample_rate), "-c:a", "pcm_f32le", "-f", "f32le"]
    with _Decoder(path, input_args=input_args, output_args=output_args) as decoder:
        while chunk := decoder.read(block_bytes):
            yield np.frombuffer(chunk, dtype="<f4")
        decoder.finish()


def duration_s(path: Path, *, input_args: Sequence[str] = ()) -> float:
    """The decoded duration, exact to the sample: the file is decoded at its own rate and its samples counted."""
    rate = sample_rate_of(path, input_args=input_args)
    output_args = [*MONO_ARGS, "-ar", str(rate), "-c:a", "pcm_s16le", "-f", "s16le"]
    decoded_bytes = 0
    with _Decoder(path, input_args=input_args, output_args=output_args) as decoder:
        while chunk := decoder.read(1 << 20):
            decoded_bytes += len(chunk)
        decoder.finish()
    return decoded_bytes / 2 / rate


def encoder_args(fmt: OutputFormat) -> list[str]:
    """ffmpeg output arguments that encode mono audio at ``fmt``'s rate into ``fmt`` (mp3, Ogg opus, raw G.711/PCM)."""
    codec = {
        "mp3": ["-c:a", "libmp3lame", "-b:a", f"{fmt.bitrate_kbps}k", "-f", "mp3"],
        "opus": ["-c:a", "libopus", "-b:a", f"{fmt.bitrate_kbps}k", "-f", "ogg"],
        "pcm": ["-c:a", "pcm_s16le", "-f", "s16le"],
        "ulaw": ["-c:a", "pcm_mulaw", "-f", "mulaw"],
        "alaw": ["-c:a", "pcm_alaw", "-f", "alaw"],
    }[fmt.codec]
    return ["-ac", "1", "-ar", str(fmt.sample_rate), "-map_metadata", "-1", *codec]


class _Decoder:
    """One ffmpeg process decoding ``path`` to stdout. stderr goes to a temporary file: a pipe that nobody reads
    could fill up and stall ffmpeg."""

    def __init__(self, path: Path, *, input_args: Sequence[str], output_args: Sequence[str]) -> None:
        self.path = path
        self.cmd = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", *input_args, "-i", str(path),
                    "-map", "0:a:0", *output_args, "pipe:1"]

    def __enter__(self) -> _Decoder:
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        return self

    def read(self, n_bytes: int) -> bytes:
        assert self._proc.stdout is not None
        return self._proc.stdout.read(n_bytes)

    def finish(self) -> str:
        """Wait for ffmpeg; return what it reported as errors; raise ``corrupt_audio`` if it gave up."""
        returncode = self._proc.wait()
        self._stderr.seek(0)
        errors = self._stderr.read().decode("utf-8", "replace").strip()
        if returncode != 0:
            raise InputError(f"{self.path.name} cannot be decoded: ffmpeg failed ({_tail(errors, self.path)})",
                             reason="corrupt_audio")
        return errors

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc.poll() is None:  # the reader stopped early
            self._proc.kill()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._proc.wait()
        self._stderr.close()


def _ffmpeg_to_file(path: Path, out: Path, *, input_args: Sequence[str], output_args: Sequence[str]) -> str:
    proc = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *input_args, "-i", str(path),
                           "-map", "0:a:0", *output_args, str(out)], capture_output=True, check=False)
    errors = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise InputError(f"{path.name} cannot be decoded: ffmpeg failed ({_tail(errors, path)})",
                         reason="corrupt_audio")
    return errors


def _check_decode(info: AudioInfo, errors: str, decoded_s: float, label: str, path: Path) -> None:
    if errors:
        raise InputError(f"input {label} is damaged: ffmpeg reported decode errors ({_tail(errors, path)}); "
                         f"re-export or re-upload it", reason="corrupt_audio")
    if not info.duration_estimated and decoded_s < info.duration_s - TRUNCATION_ALLOWANCE_S:
        raise InputError(f"input {label} is cut off: its header promises {info.duration_s:.2f} s but only "
                         f"{decoded_s:.2f} s decode; upload the complete file", reason="corrupt_audio")


def _decoded_duration_or_none(path: Path) -> float | None:
    try:
        return duration_s(path)
    except InputError:
        return None


def _raw_pcm_info(size_bytes: int, label: str) -> AudioInfo:
    if size_bytes % 2:
        raise InputError(f"input {label} is declared raw 16-bit PCM (pcm_s16le_16) but has an odd number of bytes "
                         f"({size_bytes}); it is truncated or not PCM", reason="corrupt_audio")
    return AudioInfo(duration_s=size_bytes / 2 / PCM_S16LE_16_RATE, codec="pcm_s16le",
                     sample_rate=PCM_S16LE_16_RATE, channels=1, format_name="s16le", size_bytes=size_bytes,
                     bit_rate=16 * PCM_S16LE_16_RATE)


def _has_container_magic(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    return head.startswith(_CONTAINER_MAGIC) or head[4:8] == b"ftyp"


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _tail(text: str, path: Path | None = None) -> str:
    """The last lines of ffmpeg's stderr, without the local temporary path."""
    if path is not None:
        text = text.replace(str(path), "<input>")
    text = " ".join(text.split())
    return text[-_STDERR_TAIL_CHARS:] or "no message"
