"""What an input is, asked once: the job probes it, and every later step is handed the answer.

Probing runs ffprobe on the downloaded file (or, for raw PCM, reads only its size). Preparing, planning and cutting
take the resulting ``AudioInfo`` instead of probing again, so a three-hour episode cut into sixty segments costs one
probe, not a hundred and twenty.

Messages name the input by ``label`` (the caller passes the S3 URI), never by the temporary path it was downloaded to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.audio import ffmpeg
from pipeline.audio.decode import duration_s
from pipeline.errors import InputError
from pipeline.formats import PCM_S16LE_16_RATE

#: the first bytes of containers that can never be raw PCM; a ``.pcm`` upload that starts with one is probed instead
_CONTAINER_MAGIC = (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3", b"caff", b"wvpk")


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
        return list(ffmpeg.PCM_S16LE_16_INPUT_ARGS) if self.is_raw_pcm else []


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
    done, data = ffmpeg.probe_json(path)
    fmt = data.get("format") or {}
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if not done.ok:
        raise InputError(f"input {name} is not audio: ffprobe cannot read it ({ffmpeg.tail(done.stderr, path)}); "
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
        duration_estimated="Estimating duration from bitrate" in done.stderr)


def check_limits(info: AudioInfo, *, max_bytes: int, max_seconds: float, label: str) -> None:
    """``InputError`` (too_large / too_long) if the input is over a configured limit."""
    if info.size_bytes > max_bytes:
        raise InputError(f"input {label} is {info.size_bytes} bytes, over the limit of {max_bytes} bytes "
                         f"(STS_MAX_INPUT_BYTES); compress it or split it", reason="too_large")
    if info.duration_s > max_seconds:
        raise InputError(f"input {label} is {info.duration_s:.1f} s long, over the limit of {max_seconds:g} s "
                         f"(STS_MAX_INPUT_SECONDS); split the recording", reason="too_long")


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
