"""The only place in the library that starts ffmpeg or ffprobe, and the sandbox they run in.

Inputs come from strangers, and ffmpeg is a large parser of untrusted bytes that will also follow URLs, concat lists
and playlists if a file asks it to. So every invocation is built here, and every one gets the same fences:

- **Only a local file the caller wrote, or a pipe.** An input is a ``Path`` to a regular file (no symlink, device,
  FIFO or ``/proc`` entry), passed as a ``file:`` URL, with ``-protocol_whitelist file`` (``pipe`` for a pipe) so no
  network or other protocol can ever be opened, by the input or by anything inside it.
- **A demuxer from an allow-list of audio containers, chosen by us.** The container is told by its magic bytes
  (``pipeline.audio.sniff``), never by ffmpeg's guess, and named with ``-f``; ``-format_whitelist`` fences nested
  opens too. Playlists (HLS), concat lists, image sequences and video containers are never handed to ffmpeg; raw
  formats are only ever declared by the caller (``-f s16le``/``mulaw``/``alaw``/``f32le``), and even then a file that
  is text (a playlist uploaded as ``.pcm``) is refused.
- **A wall-clock timeout on every process**, run-to-completion and streaming alike: ``timeout_for`` gives a
  generous allowance for the audio's expected length, capped by ``STS_FFMPEG_TIMEOUT_CEILING_S``. On expiry the
  process group is killed and reaped, and ``InputError(reason="decode_timeout")`` is raised.
- ``-nostdin`` for ffmpeg, stdin from ``/dev/null`` for ffprobe, stderr tails with the temporary path replaced.

Every command line is assembled by ``_ffmpeg_argv`` / ``_ffprobe_argv`` around an input made by ``_file_input`` or
``_pipe_input`` (nothing else can put a ``-i`` on a command line), and started by ``_run`` or ``_start``; nothing else
in the package calls ``subprocess``. (The offline server keeps its own ffmpeg on purpose: it plays the vendor, and
must not share the client's code.)

Audio is streamed through pipes, never read whole: a three-hour episode never sits in memory. stderr goes to a
temporary file for long-running processes, because a pipe nobody reads can fill up and stall ffmpeg.

This module is imported by ``sts-pipeline plan``, so it stays light: no numpy, no soundfile.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pipeline.audio.sniff import AUDIO_DEMUXERS, AUDIO_NAMES, HEAD_BYTES, looks_like_text, sniff
from pipeline.config import get_settings
from pipeline.errors import InputError, PermanentError
from pipeline.formats import PCM_S16LE_16_RATE, OutputFormat
from pipeline.reasons import Reason

if TYPE_CHECKING:
    import numpy as np

    _Popen = subprocess.Popen[bytes]

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: ffmpeg input arguments for raw 16 kHz mono s16le (``file_format=pcm_s16le_16``)
PCM_S16LE_16_INPUT_ARGS = ("-f", "s16le", "-ar", str(PCM_S16LE_16_RATE), "-ac", "1")
#: downmix to mono with the mix normalised to unity gain: without ``rematrix_maxval`` ffmpeg sums stereo at 0.707 per
#: channel into a float output, and 5.1 at up to 3.4x, which clips loud recordings
MONO_ARGS = ("-ac", "1", "-rematrix_maxval", "1.0")
#: headerless sample formats a caller may declare (never sniffed: raw bytes have no magic)
RAW_DEMUXERS = ("s16le", "mulaw", "alaw", "f32le")
#: private options pinned per demuxer: a QuickTime/MP4 may reference media in other files ("data references")
DEMUXER_OPTIONS: dict[str, tuple[str, ...]] = {"mov": ("-enable_drefs", "0", "-use_absolute_path", "0")}
#: a probe reads headers (and, for some containers, an index at the end): this is plenty on a loaded machine
PROBE_TIMEOUT_S = 30.0
#: a decode or encode may take ``TIMEOUT_FIXED_S`` plus real time for its audio (ffmpeg runs 100-1000x faster)
TIMEOUT_FIXED_S = 30.0
TIMEOUT_PER_AUDIO_S = 1.0
_STDERR_TAIL_CHARS = 400
_NOT_REGULAR_ROOTS = ("/proc/", "/sys/", "/dev/")


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
        for shown in (f"file:{path.absolute()}", str(path.absolute()), str(path)):
            text = text.replace(shown, "<input>")
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


def timeout_ceiling_s() -> float:
    """The longest any ffmpeg/ffprobe process may run (``STS_FFMPEG_TIMEOUT_CEILING_S``)."""
    return float(get_settings().ffmpeg_timeout_ceiling_s)


def timeout_for(expected_s: float | None) -> float:
    """Wall-clock limit for a process that handles ``expected_s`` seconds of audio (unknown: the ceiling)."""
    ceiling = timeout_ceiling_s()
    if expected_s is None:
        return ceiling
    return min(ceiling, TIMEOUT_FIXED_S + TIMEOUT_PER_AUDIO_S * max(0.0, expected_s))


def check_input(path: Path, *, input_args: Sequence[str] = (), label: str | None = None) -> str:
    """The demuxer ffmpeg will use for ``path``; ``InputError`` if the sandbox refuses it.

    Refused: anything but a regular local file (``missing_input`` / ``bad_input``); for a declared raw format, a
    file that is text; otherwise anything whose first bytes are not an allow-listed audio container (``not_audio``:
    a playlist, a concat list, an image, a video container, text, unknown data). Messages name the input by
    ``label`` (default: the file's name), never by its path, and never quote what a playlist names.
    """
    if not isinstance(path, Path):
        raise TypeError(f"the ffmpeg boundary opens only a Path the caller wrote, not {type(path).__name__}")
    name = label or path.name
    _check_local_file(path, name)
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    raw = _raw_format(input_args)
    if raw is not None:
        sniffed = sniff(head)
        if sniffed.playlist or looks_like_text(head):
            what = f"a playlist or a list of other inputs ({sniffed.looks_like})" if sniffed.playlist else "text"
            raise InputError(f"input {name} is not audio: it is declared raw samples but is {what}, which the "
                             f"pipeline never decodes or follows", reason="not_audio")
        return raw[0]
    sniffed = sniff(head)
    if sniffed.demuxer is None:
        raise InputError(_not_audio_message(name, sniffed.looks_like, sniffed.playlist), reason="not_audio")
    if sniffed.demuxer not in AUDIO_DEMUXERS:  # the sniffer and the allow-list disagree: refuse, never guess
        raise InputError(f"input {name} is not audio the pipeline reads ({sniffed.demuxer})", reason="not_audio")
    return sniffed.demuxer


# -- short runs ------------------------------------------------------------------------------------------------------


def run_to_file(path: Path, out: Path, *, input_args: Sequence[str] = (), output_args: Sequence[str],
                seek_s: int = 0, expected_s: float | None = None) -> Finished:
    """Decode the first audio stream of ``path`` and write it to ``out`` (overwritten) with ``output_args``.

    ``seek_s`` seeks the input before decoding; 0 means no ``-ss`` at all (even ``-ss 0`` makes ffmpeg keep an
    mp3's encoder delay). ``expected_s`` is the audio this run handles (see ``timeout_for``).
    """
    seek = ["-ss", str(seek_s)] if seek_s else []
    argv = _ffmpeg_argv(["-y", *seek], _file_input(path, input_args), ["-map", "0:a:0", *output_args, _file_url(out)])
    return _run(argv, timeout_s=timeout_for(expected_s), what=f"decoding {path.name}")


def probe_json(path: Path, *, input_args: Sequence[str] = ()) -> tuple[Finished, dict[str, Any]]:
    """ffprobe's ``-show_format -show_streams`` for ``path``, and its JSON parsed (``{}`` if ffprobe failed)."""
    done = _run(_ffprobe_argv(["-v", "warning", "-print_format", "json", "-show_format", "-show_streams"],
                              _file_input(path, input_args)),
                timeout_s=min(PROBE_TIMEOUT_S, timeout_ceiling_s()), what=f"probing {path.name}")
    return done, (json.loads(done.stdout or "{}") if done.ok else {})


def probe_sample_rate(path: Path) -> int:
    """The sample rate of the first audio stream; ``InputError(not_audio)`` if ffprobe finds none."""
    done = _run(_ffprobe_argv(["-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                               "-of", "csv=p=0"], _file_input(path)),
                timeout_s=min(PROBE_TIMEOUT_S, timeout_ceiling_s()), what=f"probing {path.name}")
    try:
        return int(done.stdout.strip())
    except ValueError:
        raise InputError(f"{path.name} has no readable audio stream ({tail(done.stderr, path)})",
                         reason="not_audio") from None


def probe_format_name(path: Path) -> str:
    """ffprobe's container name for ``path`` (``wav``, ``flac``, ``mp3``, ...; empty if it cannot tell)."""
    return _run(_ffprobe_argv(["-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0"],
                              _file_input(path)),
                timeout_s=min(PROBE_TIMEOUT_S, timeout_ceiling_s()), what=f"probing {path.name}").stdout.strip()


# -- streams ---------------------------------------------------------------------------------------------------------


class Decoder:
    """One ffmpeg process decoding the first audio stream of ``path`` to stdout with ``output_args``.

    ``expected_s`` is the audio it will decode (see ``timeout_for``). A reader that stops early leaves the process
    to ``__exit__``, which kills it; a process past its timeout is killed where it stands, the next ``read`` sees the
    end of the stream and ``finish`` raises ``decode_timeout``.
    """

    def __init__(self, path: Path, *, input_args: Sequence[str], output_args: Sequence[str],
                 expected_s: float | None = None) -> None:
        self.path = path
        self.cmd = _ffmpeg_argv([], _file_input(path, input_args), ["-map", "0:a:0", *output_args, "pipe:1"])
        self.timeout_s = timeout_for(expected_s)

    def __enter__(self) -> Decoder:
        self._stderr = tempfile.TemporaryFile()
        self._proc = _start(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
                            timeout_s=self.timeout_s, what=f"decoding {self.path.name}")
        return self

    def read(self, n_bytes: int) -> bytes:
        assert self._proc.popen.stdout is not None
        return self._proc.popen.stdout.read(n_bytes)

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
        try:
            self._proc.stop()  # the reader stopped early, or it is over anyway
        finally:
            assert self._proc.popen.stdout is not None
            self._proc.popen.stdout.close()
            self._stderr.close()


class Encoder:
    """One ffmpeg process that reads mono float32 at ``fmt``'s rate on stdin and writes ``fmt`` to ``out``.

    A failure raises ``PermanentError`` naming ``what`` was being encoded. ``expected_s`` is the audio it will encode
    (see ``timeout_for``): a feeder that stalls, so the pipe never closes, ends in ``decode_timeout``.
    """

    def __init__(self, fmt: OutputFormat, out: Path, *, what: str, expected_s: float | None = None) -> None:
        self.cmd = _ffmpeg_argv(["-y"], _pipe_input("f32le", fmt.sample_rate), [*encoder_args(fmt), _file_url(out)])
        self.fmt = fmt
        self.what = what
        self.timeout_s = timeout_for(expected_s)

    def __enter__(self) -> Encoder:
        self._stderr = tempfile.TemporaryFile()
        self._proc = _start(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                            timeout_s=self.timeout_s, what=f"encoding {self.what}")
        return self

    def write(self, samples: np.ndarray) -> None:
        assert self._proc.popen.stdin is not None
        try:
            self._proc.popen.stdin.write(samples.astype("<f4", copy=False).tobytes())
        except BrokenPipeError:
            raise self._failure() from None

    def _failure(self) -> PermanentError:
        self._proc.wait(raise_timeout=False)
        if self._proc.timed_out:
            return self._proc.timeout_error()
        self._stderr.seek(0)
        errors = self._stderr.read().decode("utf-8", "replace")
        return PermanentError(f"encoding {self.what} as {self.fmt.name} failed: {errors[-300:]}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        popen = self._proc.popen
        assert popen.stdin is not None
        try:
            if exc_type is not None:
                self._proc.stop()
            with contextlib.suppress(BrokenPipeError):
                popen.stdin.close()
            returncode = self._proc.wait(raise_timeout=False)
            if exc_type is None and (returncode != 0 or self._proc.timed_out):
                raise self._failure()
        finally:
            self._proc.stop()
            self._stderr.close()


#: samples a decode of an mp3 *stream* starts with: LAME's encoder delay (576) and the decoder's (528 + 1). A finished
#: mp3 file names them in its LAME header and a decode drops them; the stream the tee muxer sends has no such header
MP3_STREAM_DELAY_SAMPLES = 1105
#: characters the tee muxer's list of outputs reads as syntax, escaped in a file name
_TEE_SPECIAL = ("\\", "'", "|")


class ReadbackEncoder(Encoder):
    """An ``Encoder`` whose output is decoded back while it is written, so a measure of it ends with the encode.

    One ffmpeg encodes mono float32 from stdin and writes ``out`` through the tee muxer (byte for byte the file
    ``Encoder`` writes) and the same packets to a pipe; a second ffmpeg decodes that pipe to mono float32 at ``fmt``'s
    rate, as ``decode.pcm_stream`` decodes a file, and a thread hands ``on_samples`` those bytes in blocks of
    ``block_samples`` (the last one shorter): the samples a decode of the finished ``out`` gives. For mp3 the stream's
    extra samples are cut here: the codecs' delay by count, the encoder's padding by the number of samples written.
    ``on_samples`` runs on that thread; if it raises, the rest is drained and the error re-raised on exit.
    """

    def __init__(self, fmt: OutputFormat, out: Path, *, what: str, on_samples: Callable[[bytes], None],
                 block_samples: int, expected_s: float | None = None) -> None:
        super().__init__(fmt, out, what=what, expected_s=expected_s)
        codec_args, container = encoder_args(fmt)[:-2], encoder_args(fmt)[-1]
        target = _file_url(out)
        for special in _TEE_SPECIAL:
            target = target.replace(special, "\\" + special)
        outputs = f"[f={container}]{target}|[f={container}]pipe:1"
        self.cmd = _ffmpeg_argv(["-y"], _pipe_input("f32le", fmt.sample_rate),
                                ["-map", "0:a", *codec_args, "-f", "tee", outputs])
        self.decode_cmd = _ffmpeg_argv([], _own_stream_input(container, fmt.sample_rate),
                                       ["-map", "0:a:0", *MONO_ARGS, "-ar", str(fmt.sample_rate), "-c:a", "pcm_f32le",
                                        "-f", "f32le", "pipe:1"])
        self._on_samples = on_samples
        self._block_bytes = 4 * max(1, block_samples)
        self._delay_bytes = 4 * MP3_STREAM_DELAY_SAMPLES if fmt.codec == "mp3" else 0
        self._written = 0  # samples handed to the encoder, counted before each write
        self._error: BaseException | None = None

    def __enter__(self) -> ReadbackEncoder:
        self._decoder_stderr = tempfile.TemporaryFile()
        self._decoder = _start(self.decode_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=self._decoder_stderr, timeout_s=self.timeout_s,
                               what=f"reading back {self.what}")
        assert self._decoder.popen.stdin is not None
        try:
            self._stderr = tempfile.TemporaryFile()
            self._proc = _start(self.cmd, stdin=subprocess.PIPE, stdout=self._decoder.popen.stdin,
                                stderr=self._stderr, timeout_s=self.timeout_s, what=f"encoding {self.what}")
        except BaseException:
            self._decoder.stop()
            raise
        finally:
            self._decoder.popen.stdin.close()  # the encoder holds it: the decoder's input ends when the encoder does
        self._reader = threading.Thread(target=self._read_back, name="readback", daemon=True)
        self._reader.start()
        return self

    def write(self, samples: np.ndarray) -> None:
        self._written += len(samples)
        super().write(samples)

    def _read_back(self) -> None:
        stdout = self._decoder.popen.stdout
        assert stdout is not None
        stdout.read(self._delay_bytes)
        handed = 0
        while chunk := stdout.read(self._block_bytes):
            if self._delay_bytes:  # an mp3 stream ends with the encoder's padding
                chunk = chunk[:max(0, 4 * self._written - handed)]
            handed += len(chunk)
            if chunk and self._error is None:
                try:
                    self._on_samples(chunk)
                except BaseException as error:  # noqa: B036  (handed to the caller's thread on exit)
                    self._error = error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is not None:
                self._decoder.stop()
            super().__exit__(exc_type, exc, tb)
            self._reader.join()
            returncode = self._decoder.wait(raise_timeout=False)
            if exc_type is None:
                self._raise_readback_failure(returncode)
        finally:
            self._decoder.stop()
            self._reader.join()
            assert self._decoder.popen.stdout is not None
            self._decoder.popen.stdout.close()
            self._decoder_stderr.close()

    def _raise_readback_failure(self, returncode: int) -> None:
        if self._decoder.timed_out:
            raise self._decoder.timeout_error()
        if returncode != 0:
            self._decoder_stderr.seek(0)
            errors = self._decoder_stderr.read().decode("utf-8", "replace")
            raise PermanentError(f"reading back {self.what} as {self.fmt.name} failed: {errors[-300:]}")
        if self._error is not None:
            raise self._error


# -- the boundary: every command line is built and started here ------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    """The input side of a command line, sandbox included; made only by ``_file_input`` and ``_pipe_input``."""

    args: tuple[str, ...]


def _file_input(path: Path, input_args: Sequence[str] = ()) -> _Input:
    """``path`` as ffmpeg may open it: local file protocol only, the demuxer we chose, and nothing it could follow."""
    demuxer = check_input(path, input_args=input_args)
    raw = _raw_format(input_args)
    options = raw[1] if raw is not None else list(DEMUXER_OPTIONS.get(demuxer, ()))
    return _Input(("-protocol_whitelist", "file", "-format_whitelist", demuxer, "-f", demuxer, *options,
                   "-i", _file_url(path)))


def _pipe_input(raw_format: str, sample_rate: int) -> _Input:
    """Mono samples of ``raw_format`` on stdin: the pipe protocol only."""
    if raw_format not in RAW_DEMUXERS:
        raise ValueError(f"{raw_format!r} is not a raw format the boundary reads from a pipe")
    return _Input(("-protocol_whitelist", "pipe", "-format_whitelist", raw_format, "-f", raw_format,
                   "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"))


def _own_stream_input(demuxer: str, sample_rate: int) -> _Input:
    """What ``ReadbackEncoder``'s own encoder writes to a pipe (``encoder_args``' container): the pipe protocol only."""
    raw = ("-ar", str(sample_rate), "-ac", "1") if demuxer in RAW_DEMUXERS else ()
    return _Input(("-protocol_whitelist", "pipe", "-format_whitelist", demuxer, "-f", demuxer, *raw, "-i", "pipe:0"))


def _file_url(path: Path) -> str:
    """A local path as a ``file:`` URL, so no part of a name can be read as another protocol."""
    return f"file:{path.absolute()}"


def _raw_format(input_args: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(demuxer, rate and channel args)`` for a declared raw input (``-f s16le -ar 16000 -ac 1``), else None."""
    args = list(input_args)
    if not args:
        return None
    if len(args) % 2:
        raise ValueError(f"input arguments come in pairs: {args}")
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    if set(pairs) - {"-f", "-ar", "-ac"} or pairs.get("-f") not in RAW_DEMUXERS:
        raise ValueError(f"input arguments may only declare a raw format ({', '.join(RAW_DEMUXERS)}) with -ar/-ac, "
                         f"not {args}")
    rest = [item for key in ("-ar", "-ac") if key in pairs for item in (key, str(int(pairs[key])))]
    return pairs["-f"], rest


def _check_local_file(path: Path, name: str) -> None:
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        raise InputError(f"input {name} does not exist", reason="missing_input") from None
    resolved = str(path.resolve())
    if not stat.S_ISREG(found.st_mode) or resolved.startswith(_NOT_REGULAR_ROOTS):
        raise InputError(f"input {name} is not a regular file (a link, pipe or device is never opened)",
                         reason="bad_input")


def _not_audio_message(name: str, looks_like: str, playlist: bool) -> str:
    if playlist:
        return (f"input {name} is not audio: it is a playlist or a list of other inputs ({looks_like}), which the "
                f"pipeline never follows (no file or URL it names is opened); upload the recording itself")
    if looks_like in ("text", "unknown data"):
        return (f"input {name} is not audio: ffprobe cannot read it, as its first bytes are no audio container the "
                f"decoder accepts ({looks_like}); upload a {AUDIO_NAMES} file")
    return (f"input {name} is not audio: ffprobe found no audio stream (it looks like {looks_like}); only audio "
            f"containers are decoded: upload a {AUDIO_NAMES} file")


def _ffmpeg_argv(before: Sequence[str], source: _Input, after: Sequence[str]) -> list[str]:
    _no_other_input(before, after)
    return [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", *before, *source.args, *after]


def _ffprobe_argv(options: Sequence[str], source: _Input) -> list[str]:
    _no_other_input(options)
    return [FFPROBE, "-hide_banner", *options, *source.args]


def _no_other_input(*parts: Sequence[str]) -> None:
    for part in parts:
        if {"-i", "-protocol_whitelist", "-format_whitelist"} & set(part):
            raise ValueError(f"only the boundary's own input may reach ffmpeg: {list(part)}")


class _Process:
    """A started ffmpeg/ffprobe and the watchdog that kills its process group at ``timeout_s``."""

    def __init__(self, popen: _Popen, *, timeout_s: float, what: str) -> None:
        self.popen = popen
        self.timeout_s = timeout_s
        self.what = what
        self.timed_out = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.timed_out = True
        _kill(self.popen)

    def wait(self, *, raise_timeout: bool = True) -> int:
        """Wait for the process (the watchdog ends it at the latest); ``decode_timeout`` if it had to."""
        returncode = self.popen.wait()
        self._timer.cancel()
        if self.timed_out and raise_timeout:
            raise self.timeout_error()
        return returncode

    def stop(self) -> None:
        """Kill the process group if it still runs, and reap it."""
        self._timer.cancel()
        _kill(self.popen)
        self.popen.wait()

    def timeout_error(self) -> InputError:
        return _timeout_error(self.what, self.timeout_s)


def _timeout_error(what: str, timeout_s: float) -> InputError:
    return InputError(f"{what} did not finish within {timeout_s:.0f} s and was stopped: an endless or pathological "
                      f"input (the limit is real time for the audio plus {TIMEOUT_FIXED_S:.0f} s, at most "
                      f"STS_FFMPEG_TIMEOUT_CEILING_S)", reason=Reason.DECODE_TIMEOUT.value)


def _kill(popen: _Popen) -> None:
    """SIGKILL the process group ``popen`` leads (it was started in a session of its own), if it still runs."""
    if popen.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)


def _run(argv: list[str], *, timeout_s: float, what: str) -> Finished:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        raise _timeout_error(what, timeout_s) from None
    finally:
        _kill(proc)
        proc.wait()
    return Finished(proc.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))


def _start(argv: list[str], *, stdin: int | IO[bytes], stdout: int | IO[bytes], stderr: int | IO[bytes],
           timeout_s: float, what: str) -> _Process:
    popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
    return _Process(popen, timeout_s=timeout_s, what=what)
