"""The only place in the library that starts ffmpeg or ffprobe.

Inputs come from strangers, and ffmpeg is a large parser of untrusted bytes that will also follow URLs, concat lists
and playlists if a file asks it to. Keeping every invocation here means the sandbox can be added in one place (a
protocol whitelist, a demuxer allow-list, timeouts) and reviewed in one place. Every command line is built by
``_ffmpeg_argv`` / ``_ffprobe_argv`` and started by ``_run`` or ``_start``; nothing else in the package calls
``subprocess``. (The offline server keeps its own ffmpeg on purpose: it plays the vendor, and must not share the
client's code.)

Audio is streamed through pipes, never read whole: pydub's ``AudioSegment`` would load a three-hour episode into
memory. stderr goes to a temporary file for long-running processes, because a pipe nobody reads can fill up and stall
ffmpeg.

This module is imported by ``sts-pipeline plan``, so it stays light: no numpy, no soundfile.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pipeline.errors import InputError, PermanentError
from pipeline.formats import PCM_S16LE_16_RATE, OutputFormat

if TYPE_CHECKING:
    import numpy as np

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: ffmpeg input arguments for raw 16 kHz mono s16le (``file_format=pcm_s16le_16``)
PCM_S16LE_16_INPUT_ARGS = ("-f", "s16le", "-ar", str(PCM_S16LE_16_RATE), "-ac", "1")
#: downmix to mono with the mix normalised to unity gain: without ``rematrix_maxval`` ffmpeg sums stereo at 0.707 per
#: channel into a float output, and 5.1 at up to 3.4x, which clips loud recordings
MONO_ARGS = ("-ac", "1", "-rematrix_maxval", "1.0")
_STDERR_TAIL_CHARS = 400


@dataclass(frozen=True)
class Finished:
    """How a short ffmpeg/ffprobe run ended: its exit code and what it printed (decoded, not yet stripped)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def tail(text: str, path: Path | None = None) -> str:
    """The last lines of ffmpeg's stderr, without the local temporary path."""
    if path is not None:
        text = text.replace(str(path), "<input>")
    text = " ".join(text.split())
    return text[-_STDERR_TAIL_CHARS:] or "no message"


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


# -- short runs ------------------------------------------------------------------------------------------------------


def run_to_file(path: Path, out: Path, *, input_args: Sequence[str] = (), output_args: Sequence[str],
                seek_s: int = 0) -> Finished:
    """Decode the first audio stream of ``path`` and write it to ``out`` (overwritten) with ``output_args``.

    ``seek_s`` seeks the input before decoding; 0 means no ``-ss`` at all (even ``-ss 0`` makes ffmpeg keep an
    mp3's encoder delay).
    """
    seek = ["-ss", str(seek_s)] if seek_s else []
    return _run(_ffmpeg_argv("-y", *seek, *input_args, "-i", str(path), "-map", "0:a:0", *output_args, str(out)))


def probe_json(path: Path) -> tuple[Finished, dict[str, Any]]:
    """ffprobe's ``-show_format -show_streams`` for ``path``, and its JSON parsed (``{}`` if ffprobe failed)."""
    done = _run(_ffprobe_argv("-v", "warning", "-print_format", "json", "-show_format", "-show_streams",
                              "-i", str(path)))
    return done, (json.loads(done.stdout or "{}") if done.ok else {})


def probe_sample_rate(path: Path) -> int:
    """The sample rate of the first audio stream; ``InputError(not_audio)`` if ffprobe finds none."""
    done = _run(_ffprobe_argv("-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                              "-of", "csv=p=0", str(path)))
    try:
        return int(done.stdout.strip())
    except ValueError:
        raise InputError(f"{path.name} has no readable audio stream ({tail(done.stderr, path)})",
                         reason="not_audio") from None


def probe_format_name(path: Path) -> str:
    """ffprobe's container name for ``path`` (``wav``, ``flac``, ``mp3``, ...; empty if it cannot tell)."""
    return _run(_ffprobe_argv("-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0",
                              str(path))).stdout.strip()


def probe_url_duration(url: str, *, timeout_s: float) -> float:
    """The container duration ffprobe reads from ``url`` (ranged HTTP requests); ``ValueError`` if it cannot.

    A ``subprocess.TimeoutExpired`` after ``timeout_s`` is left to the caller, which reports it per input.
    """
    done = _run(_ffprobe_argv("-v", "error", "-show_entries", "format=duration", "-of", "json", url),
                timeout_s=timeout_s)
    if not done.ok:
        raise ValueError(done.stderr.strip().splitlines()[-1][:200] if done.stderr.strip() else "ffprobe failed")
    duration = json.loads(done.stdout or "{}").get("format", {}).get("duration")
    if duration is None:
        raise ValueError("ffprobe found no duration")
    return float(duration)


# -- streams ---------------------------------------------------------------------------------------------------------


class Decoder:
    """One ffmpeg process decoding the first audio stream of ``path`` to stdout with ``output_args``."""

    def __init__(self, path: Path, *, input_args: Sequence[str], output_args: Sequence[str]) -> None:
        self.path = path
        self.cmd = _ffmpeg_argv(*input_args, "-i", str(path), "-map", "0:a:0", *output_args, "pipe:1")

    def __enter__(self) -> Decoder:
        self._stderr = tempfile.TemporaryFile()
        self._proc = _start(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr)
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
            raise InputError(f"{self.path.name} cannot be decoded: ffmpeg failed ({tail(errors, self.path)})",
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


class Encoder:
    """One ffmpeg process that reads mono float32 at ``fmt``'s rate on stdin and writes ``fmt`` to ``out``.

    A failure raises ``PermanentError`` naming ``what`` was being encoded.
    """

    def __init__(self, fmt: OutputFormat, out: Path, *, what: str) -> None:
        self.cmd = _ffmpeg_argv("-y", "-f", "f32le", "-ar", str(fmt.sample_rate), "-ac", "1", "-i", "pipe:0",
                                *encoder_args(fmt), str(out))
        self.fmt = fmt
        self.what = what

    def __enter__(self) -> Encoder:
        self._stderr = tempfile.TemporaryFile()
        self._proc = _start(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        return self

    def write(self, samples: np.ndarray) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(samples.astype("<f4", copy=False).tobytes())
        except BrokenPipeError:
            raise self._failure() from None

    def _failure(self) -> PermanentError:
        self._proc.wait()
        self._stderr.seek(0)
        errors = self._stderr.read().decode("utf-8", "replace")
        return PermanentError(f"encoding {self.what} as {self.fmt.name} failed: {errors[-300:]}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._proc.stdin is not None
        if exc_type is not None:
            self._proc.kill()
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        returncode = self._proc.wait()
        try:
            if exc_type is None and returncode != 0:
                raise self._failure()
        finally:
            self._stderr.close()


# -- the boundary: every command line is built and started here ------------------------------------------------------


def _ffmpeg_argv(*args: str) -> list[str]:
    return [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", *args]


def _ffprobe_argv(*args: str) -> list[str]:
    return [FFPROBE, *args]


def _run(argv: list[str], *, timeout_s: float | None = None) -> Finished:
    proc = subprocess.run(argv, capture_output=True, check=False, timeout=timeout_s)
    return Finished(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def _start(argv: list[str], *, stdin: int | IO[bytes], stdout: int | IO[bytes],
           stderr: int | IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
