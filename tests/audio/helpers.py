"""Small helpers the audio tests share: make files with the ffmpeg CLI, decode a short clip whole, craft hostile
inputs, watch the boundary's processes and a loopback HTTP server that counts what reaches it."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.decode import pcm_stream

#: the generated inputs of ``conftest.files``
RATE = 44100
SECONDS = 3.0


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg CLI to make a test file (the library's own runs go through ``pipeline.audio.ffmpeg``)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def decoded(path: Path, *, sample_rate: int, input_args: Sequence[str] = ()) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``: the stream's blocks joined, for short test clips only."""
    blocks = list(pcm_stream(path, sample_rate=sample_rate, input_args=input_args))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def lying_flac(path: Path, *, actual_s: float, claimed_s: float, rate: int = 16000) -> Path:
    """A FLAC whose frames hold ``actual_s`` of audio and whose STREAMINFO claims ``claimed_s`` (its total-samples
    field patched: 36 bits at the end of the 8 bytes that start 18 bytes in)."""
    ffmpeg("-f", "lavfi", "-i", f"sine=f=220:r={rate}:d={actual_s}", "-c:a", "flac", str(path))
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    field = int.from_bytes(data[18:26], "big")
    assert field >> 44 == rate
    field = (field & ~((1 << 36) - 1)) | round(claimed_s * rate)
    data[18:26] = field.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def media_children() -> list[tuple[int, str, str]]:
    """(pid, name, state) of every ffmpeg/ffprobe process whose parent is this one, zombies included."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2:].split()[:2]
        if int(ppid) == me and name in ("ffmpeg", "ffprobe"):
            found.append((int(entry.name), name, state))
    return found


def record_argvs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command line the boundary starts from now on, recorded as it passes through ``_run`` and ``_start``."""
    from pipeline.audio import ffmpeg as boundary

    seen: list[list[str]] = []
    run, start = boundary._run, boundary._start
    monkeypatch.setattr(boundary, "_run", lambda argv, **kw: (seen.append(list(argv)), run(argv, **kw))[1])
    monkeypatch.setattr(boundary, "_start", lambda argv, **kw: (seen.append(list(argv)), start(argv, **kw))[1])
    return seen


class CountingServer:
    """An HTTP server on loopback that answers every GET with a few bytes of mp3 and counts the requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                owner.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.end_headers()
                self.wfile.write(b"\xff\xfb\x90\x00" + b"\x00" * 413)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
