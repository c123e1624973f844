"""What an input is, asked once: the job probes it, and every later step is handed the answer.

Probing tells the container by its first bytes (``pipeline.audio.sniff``: anything that is not an allow-listed audio
container is refused here, before ffmpeg sees it), then reads a WAV's or FLAC's header in process
(``pipeline.audio.native``, no process started) or runs the sandboxed ffprobe on the downloaded file (or, for raw
PCM, reads only its size). Preparing, planning and cutting take the resulting ``AudioInfo`` instead of probing
again, so a three-hour episode cut into sixty segments costs one probe, not a hundred and twenty.

**Duration is counted, not read.** A header can say anything (a FLAC whose STREAMINFO says 2 s can hold 90 s), so
the length that limits, bills and plans is the decoded one:

- ``probe`` records the header's claim (``header_duration_s``) and starts ``duration_s`` from it;
- ``check_limits`` refuses what is over a limit by its size, or by a header that already claims too much (the file
  is then too long or lies about itself: either way it is not sent), and arms the count with the limit;
- ``prepare``'s decode, which every input goes through once anyway, counts the samples, stops at the limit + 1 s
  and refuses ``too_long`` whatever the header says, and writes the counted length into ``duration_s``
  (``counted`` becomes true). There is no second decode.

Messages name the input by ``label`` (the caller passes the S3 URI), never by the temporary path it was downloaded to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.audio import ffmpeg, native
from pipeline.audio.sniff import HEAD_BYTES, sniff
from pipeline.errors import InputError
from pipeline.formats import PCM_S16LE_16_RATE

#: a decode that counts stops this far past the limit: enough to tell "over" from "at" without decoding the rest
COUNT_MARGIN_S = 1.0


@dataclass
class AudioInfo:
    """What an input's header says (read by libsndfile for WAV and FLAC, by ffprobe for the rest; for raw PCM, the
    file size), and what its decode counted.

    ``duration_s`` is the length that limits, bills and plans: the header's claim (or an estimate) until the input
    is decoded, the counted length after (``counted``). ``prepare`` updates it in place.
    """

    duration_s: float
    codec: str
    sample_rate: int
    channels: int
    format_name: str
    size_bytes: int
    bit_rate: int | None
    #: the header gives no length of its own: ffprobe guessed it from the bitrate (mp3 without a Xing header, ADTS
    #: AAC), or nothing could be read; a truncated file cannot be told from a short one
    duration_estimated: bool = False
    #: the length the container claims (None: it claims none), kept beside the counted one for provenance
    header_duration_s: float | None = None
    #: ``duration_s`` is the decoded length (raw PCM: its size, which is its sample count)
    counted: bool = False
    #: set by ``check_limits``: the counting decode stops just past it and refuses anything longer
    max_seconds: float | None = None

    @property
    def is_raw_pcm(self) -> bool:
        return self.format_name == "s16le"

    def input_args(self) -> list[str]:
        """The ffmpeg arguments that go before ``-i`` to read this input (raw PCM has no header to read)."""
        return list(ffmpeg.PCM_S16LE_16_INPUT_ARGS) if self.is_raw_pcm else []

    def count_limit_s(self) -> float | None:
        """Where a counting decode stops: the limit + ``COUNT_MARGIN_S`` (None: no limit armed, decode it all)."""
        return None if self.max_seconds is None else self.max_seconds + COUNT_MARGIN_S

    def record_count(self, decoded_s: float, *, label: str) -> None:
        """Make ``decoded_s`` the input's length; ``too_long`` past the armed limit, ``empty_input`` for none."""
        if self.max_seconds is not None and decoded_s > self.max_seconds:
            claim = "" if self.header_duration_s is None else f"; its header claims {self.header_duration_s:.1f} s"
            raise InputError(f"input {label} is longer than the limit of {self.max_seconds:g} s "
                             f"(STS_MAX_INPUT_SECONDS): decoding was stopped at {decoded_s:.1f} s{claim}; "
                             f"split the recording", reason="too_long")
        if decoded_s <= 0:
            raise InputError(f"input {label} holds no audio ({self.format_name} that decodes to 0 samples): upload "
                             f"the recording again", reason="empty_input")
        self.duration_s = decoded_s
        self.counted = True


def probe(path: Path, *, file_format: str = "other", label: str | None = None) -> AudioInfo:
    """Describe an input; ``InputError`` (missing_input, empty_input, not_audio, bad_input) if it is unusable.

    ``file_format="pcm_s16le_16"`` declares the file raw 16 kHz mono s16le: its duration comes from its size. A file
    declared raw that starts with a container signature (RIFF, fLaC, OggS, ID3, ...) is probed like any other, since
    reading a WAV header as samples would put a click at the start and get the length wrong; one that is text (a
    playlist uploaded as ``.pcm``) is refused.
    """
    name = label or str(path)
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"input {name} does not exist", reason="missing_input") from None
    if size_bytes == 0:
        raise InputError(f"input {name} is empty (0 bytes): upload the recording again", reason="empty_input")
    if file_format == "pcm_s16le_16" and not _has_container_magic(path):
        ffmpeg.check_input(path, input_args=ffmpeg.PCM_S16LE_16_INPUT_ARGS, label=name)
        return _raw_pcm_info(size_bytes, name)
    ffmpeg.check_input(path, label=name)
    header = native.read_header(path)
    if header is not None:
        return _native_info(header, size_bytes)
    return _ffprobe_info(path, size_bytes, name)


def _ffprobe_info(path: Path, size_bytes: int, name: str) -> AudioInfo:
    """What ffprobe says about an input the sandbox accepted (every container but the WAV and FLAC files
    ``native.read_header`` reads)."""
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
    header = _float(audio.get("duration"))
    if header is None:
        header = _float(fmt.get("duration"))
    bit_rate = audio.get("bit_rate") or fmt.get("bit_rate")
    bit_rate = int(_float(bit_rate) or 0) or None
    estimated = header is None or "Estimating duration from bitrate" in done.stderr
    # no header says (a streamed WAV, raw ADTS): the size over the bitrate until prepare's decode counts it
    duration = header if header is not None else (size_bytes * 8 / bit_rate if bit_rate else 0.0)
    return AudioInfo(
        duration_s=duration, codec=str(audio.get("codec_name")), sample_rate=int(audio.get("sample_rate") or 0),
        channels=int(audio.get("channels") or 0), format_name=str(fmt.get("format_name")), size_bytes=size_bytes,
        bit_rate=bit_rate, duration_estimated=estimated, header_duration_s=header)


def _native_info(header: native.Header, size_bytes: int) -> AudioInfo:
    """An ``AudioInfo`` from a header libsndfile read, with ffprobe's names and bitrate (FLAC: size over duration)."""
    seconds = header.frames / header.sample_rate
    bit_rate = header.bit_rate
    if bit_rate is None and seconds > 0:
        bit_rate = int(size_bytes * 8 / seconds)
    return AudioInfo(duration_s=seconds, codec=header.codec, sample_rate=header.sample_rate,
                     channels=header.channels, format_name=header.format_name, size_bytes=size_bytes,
                     bit_rate=bit_rate, header_duration_s=seconds)


def check_limits(info: AudioInfo, *, max_bytes: int, max_seconds: float, label: str) -> None:
    """``InputError`` (too_large / too_long) if the input is over a configured limit; arm the count with the limit.

    The length checked here is the header's claim (counted already for raw PCM): one that claims more than the limit
    is refused now. One that claims less is counted by ``prepare``, which refuses it if it decodes longer.
    """
    if info.size_bytes > max_bytes:
        raise InputError(f"input {label} is {info.size_bytes} bytes, over the limit of {max_bytes} bytes "
                         f"(STS_MAX_INPUT_BYTES); compress it or split it", reason="too_large")
    if not info.duration_estimated and info.duration_s > max_seconds:
        said = "" if info.counted else ", as its header says"
        raise InputError(f"input {label} is {info.duration_s:.1f} s long, over the limit of {max_seconds:g} s "
                         f"(STS_MAX_INPUT_SECONDS){said}; split the recording", reason="too_long")
    info.max_seconds = max_seconds


def _raw_pcm_info(size_bytes: int, label: str) -> AudioInfo:
    if size_bytes % 2:
        raise InputError(f"input {label} is declared raw 16-bit PCM (pcm_s16le_16) but has an odd number of bytes "
                         f"({size_bytes}); it is truncated or not PCM", reason="corrupt_audio")
    seconds = size_bytes / 2 / PCM_S16LE_16_RATE
    return AudioInfo(duration_s=seconds, codec="pcm_s16le", sample_rate=PCM_S16LE_16_RATE, channels=1,
                     format_name="s16le", size_bytes=size_bytes, bit_rate=16 * PCM_S16LE_16_RATE,
                     header_duration_s=seconds, counted=True)


def _has_container_magic(path: Path) -> bool:
    """A container's signature (RIFF, fLaC, OggS, ID3, ftyp, ...); a bare MPEG frame sync is too weak to count, as
    raw samples start with ``ff fb`` often enough."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    demuxer = sniff(head).demuxer
    return demuxer is not None and (demuxer not in ("mp3", "aac") or head.startswith(b"ID3"))


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
