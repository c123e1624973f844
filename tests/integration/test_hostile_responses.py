"""A service (or a proxy in front of it) that answers 200 with something that is not the audio asked for: an HTML
block page for a pcm request, a WAV for an mp3 request, a body that never ends, a body that trickles. Each job ends
``failed`` with its own reason within its requests' deadlines plus backoff, no output is committed, and what the
service billed stays in the attempt records.

The offline server has no such knob (it is a faithful service), so a tiny stand-in answers instead: ``http.server``
in a thread on a free loopback port. It answers the account endpoints the preflight asks (as a plain pro account)
and the streaming endpoint by voice id: the voice names the misbehaviour.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from pipeline.api.client import StsClient
from pipeline.errors import TransientError
from pipeline.local.samples import speech_like
from pipeline.local.services import LocalStack
from pipeline.manifest.job import Job
from tests.support import lane, write_input, write_jsonl

HTML = (b"<!DOCTYPE html><html><head><title>Request blocked</title></head><body><h1>Access denied</h1>"
        b"<p>Your request was blocked by the proxy.</p></body></html>")
COST = "17"
#: the stand-in's misbehaviours, by voice id
HTML_VOICE, WAV_VOICE, ENDLESS_VOICE, TRICKLE_VOICE, GOOD_VOICE = (
    "HostileHtml000000001", "HostileWav0000000001", "HostileEndless000001", "HostileTrickle000001",
    "HostileGood000000001")
#: the most an endless body sends before the stand-in gives up by itself (the client must stop long before)
ENDLESS_LIMIT_BYTES = 64 * 1024 * 1024
FAST = {"STS_BACKOFF_BASE_S": "0.2", "STS_BACKOFF_MAX_S": "0.5", "STS_MAX_ATTEMPTS": "2"}


def _pcm(seconds: float, rate: int = 16000) -> bytes:
    return bytes((np.clip(speech_like(seconds, rate, seed=5), -1, 1) * 20000).astype("<i2").tobytes())


def _wav(seconds: float) -> bytes:
    data = _pcm(seconds)
    header = (b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + len(data).to_bytes(4, "little"))
    return header + data


class StandIn(BaseHTTPRequestHandler):
    """One request of the stand-in. Class attributes hold what all requests share."""

    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, int]] = []  # (voice, bytes sent)
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return

    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/v1/models":
            self._json([{"model_id": "eleven_english_sts_v2", "can_do_voice_conversion": True},
                        {"model_id": "eleven_multilingual_sts_v2", "can_do_voice_conversion": True}])
        elif url.path == "/v2/voices":
            ids = parse_qs(url.query).get("voice_ids", [])
            self._json({"voices": [{"voice_id": v, "name": v} for v in ids], "has_more": False,
                        "total_count": len(ids), "next_page_token": None})
        elif url.path == "/v1/user/subscription":
            self._json({"tier": "pro", "character_count": 0, "character_limit": 500_000,
                        "next_character_count_reset_unix": int(time.time()) + 86_400, "status": "active"})
        else:
            self.send_error(404)

    def _read_request_body(self) -> None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    return
        self.rfile.read(int(self.headers.get("content-length") or 0))

    def _start(self, content_type: str, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("character-cost", COST)
        self.send_header("request-id", uuid.uuid4().hex)
        if length is None:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path).path.split("/")
        voice = parts[3] if len(parts) > 3 else ""
        self._read_request_body()
        sent = 0
        try:
            if voice == HTML_VOICE:  # a block page that calls itself audio
                self._start("audio/pcm", len(HTML))
                self.wfile.write(HTML)
                sent = len(HTML)
            elif voice == WAV_VOICE:  # a WAV for an mp3 request
                body = _wav(1.0)
                self._start("audio/mpeg", len(body))
                self.wfile.write(body)
                sent = len(body)
            elif voice == ENDLESS_VOICE:  # good pcm, forever
                self._start("audio/pcm")
                block = _pcm(1.0)
                while sent < ENDLESS_LIMIT_BYTES:
                    self._chunk(block)
                    sent += len(block)
            elif voice == TRICKLE_VOICE:  # good pcm, two bytes every 0.4 s (a second of audio would take 2 h)
                self._start("audio/pcm")
                for _ in range(100):
                    self._chunk(b"\x01\x00")
                    sent += 2
                    time.sleep(0.4)
            else:  # what was asked for: a second of pcm_16000
                body = _pcm(1.0)
                self._start("audio/pcm", len(body))
                self.wfile.write(body)
                sent = len(body)
            if voice in (ENDLESS_VOICE, TRICKLE_VOICE):
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what it should do
        finally:
            with self.lock:
                self.requests.append((voice, sent))


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _record(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]


def test_hostile_200s_fail_their_jobs_through_a_worker(stack: LocalStack, s3: Any, bucket: str, tmp_path: Path,
                                                       stand_in: str) -> None:
    s3.upload_file(str(write_input(tmp_path / "clip.wav", 1.0)), bucket, "in/clip.wav")
    cases = {"html": (HTML_VOICE, "pcm_16000", "wrong_format"), "wav": (WAV_VOICE, "mp3_44100_128", "wrong_format"),
             "endless": (ENDLESS_VOICE, "pcm_16000", "oversized_response"), "good": (GOOD_VOICE, "pcm_16000", None)}
    lines = [{"input": f"s3://{bucket}/in/clip.wav", "voice_id": voice, "output_format": fmt,
              "output": f"s3://{bucket}/out/{name}.bin"} for name, (voice, fmt, _) in cases.items()]
    manifest = write_jsonl(tmp_path / "hostile.jsonl", lines)
    StandIn.requests.clear()
    with lane(stack, STS_API_BASE_URL=stand_in, **FAST) as test_lane:
        test_lane.start_worker(concurrency=2)
        started = time.monotonic()
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "150", timeout_s=200)
        elapsed = time.monotonic() - started
    assert result.returncode == 1, (result.stdout[-2000:], result.stderr[-3000:])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])}
    for name, (_voice, _, reason) in cases.items():
        if reason is None:
            assert f"out/{name}.bin" in keys and f"out/{name}.bin.provenance.json" in keys
            continue
        assert f"out/{name}.bin" not in keys and f"out/{name}.bin.provenance.json" not in keys, name
        record = _record(s3, bucket, f"out/{name}.bin.failure.json")
        assert record["status"] == "failed" and record["error"]["reason"] == reason, (name, record["error"])
        attempts = record["attempts"]
        assert [(a["status"], a["outcome"]) for a in attempts] == [(200, reason)] * 2, (name, attempts)
        assert all(a["credits"] == float(COST) for a in attempts), attempts  # billed, then refused: still recorded
        assert all(a["duration_s"] < 10 for a in attempts), attempts
    endless = [sent for voice, sent in StandIn.requests if voice == ENDLESS_VOICE]
    # not read to the end: what the stand-in got rid of is what the client read (at most its byte bound, under 1 MB
    # here) plus what the loopback's socket buffers hold, which the kernel sizes (several MB; more on some machines)
    assert len(endless) == 2 and all(sent < 1024 * 1024 + _socket_buffering() for sent in endless), endless
    assert elapsed < 120


def test_a_trickling_body_ends_at_its_deadline_over_real_http(stand_in: str, tmp_path: Path) -> None:
    audio = write_input(tmp_path / "clip.wav", 1.0)
    job = Job(input="s3://in-bucket/clip.wav", voice_id=TRICKLE_VOICE, output_format="pcm_16000")
    started = time.monotonic()
    with StsClient(stand_in, "test-key-trickle", read_timeout_s=5, deadline_base_s=1.0,
                   deadline_per_input_s=1.0) as client:
        with pytest.raises(TransientError) as caught:
            client.stream(job, audio, tmp_path / "out.pcm", input_s=1.0, expected_output_s=1.0)
    elapsed = time.monotonic() - started
    assert caught.value.reason == "deadline" and caught.value.status == 200
    assert 2.0 <= elapsed < 4.0, elapsed  # the deadline (2 s) plus at most one gap between bytes
    assert caught.value.response is not None and caught.value.response.headers["character-cost"] == COST


def _socket_buffering() -> int:
    """The most a TCP connection's two buffers can hold on this machine (tcp_rmem and tcp_wmem maxima)."""
    return sum(int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2]) for name in ("tcp_rmem", "tcp_wmem"))
