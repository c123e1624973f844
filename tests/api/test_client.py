"""The client against ``httpx.MockTransport``: the envelope and its fallbacks, odd values and bodies, and a 200 that
is not trusted (magic bytes, the byte bound, the total deadline)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pipeline.api.client import StsClient
from pipeline.api.response import BodyGuard, ResponseFault, byte_bound, bytes_per_second, request_deadline_s, sniff
from pipeline.config import Settings
from pipeline.conversion.calls import AttemptRecord, CallContext, billed_credits, convert_with_retries
from pipeline.errors import (
    ApiError,
    AuthError,
    PipelineError,
    QuotaExceededError,
    RateLimitedError,
    RefusedByPlanError,
    RejectedError,
    ResponseInfo,
    TransientError,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import speech_like
from pipeline.manifest.job import Job

Handler = Callable[[httpx.Request], httpx.Response]


def _job(output_format: str = "pcm_16000", **fields: Any) -> Job:
    return Job(input="s3://in-bucket/a.wav", voice_id="VoiceAbc123", output_format=output_format, **fields)


def _pcm(seconds: float, rate: int = 16000) -> bytes:
    return bytes((np.clip(speech_like(seconds, rate, seed=3), -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "in.wav"
    path.write_bytes(b"RIFF not read by the mock")
    return path


def call(handler: Handler, audio: Path, job: Job | None = None, **kwargs: Any) -> Any:
    client_args = {key: kwargs.pop(key) for key in ("deadline_base_s", "deadline_per_input_s", "read_timeout_s")
                   if key in kwargs}
    with StsClient("http://sts.test", "test-key-client", transport=httpx.MockTransport(handler),
                   **client_args) as client:
        return client.stream(job or _job(), audio, audio.with_suffix(".out"), **kwargs)


def raised(handler: Handler, audio: Path, job: Job | None = None, **kwargs: Any) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        call(handler, audio, job, **kwargs)
    return caught.value


def answer(status: int, body: Any = None, *, headers: dict[str, Any] | None = None,
           content: bytes | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content, headers=headers)
        return httpx.Response(status, json=body, headers=headers)
    return handler


def envelope(code: str | None, legacy: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"detail": {"type": "x", "code": code, "message": f"{code} said", "request_id": "req-from-body",
                       "param": None, "status": legacy or code, **extra}}


# --- the envelope and its fallbacks

def test_a_quota_401_is_not_a_bad_key(audio: Path) -> None:
    error = raised(answer(401, envelope("quota_exceeded", next_character_count_reset_unix=4_102_444_800 - 86_400 * 365
                                        )), audio)
    assert isinstance(error, QuotaExceededError) and not isinstance(error, AuthError)
    assert error.reason == "quota_exceeded" and error.final_state.value == "deferred"
    bad_key = raised(answer(401, envelope("invalid_api_key")), audio)
    assert isinstance(bad_key, AuthError)
    assert bad_key.message.startswith("the service refused the API key (401)")


def test_a_402_is_a_spent_quota(audio: Path) -> None:
    assert isinstance(raised(answer(402, envelope("insufficient_credits")), audio), QuotaExceededError)


def test_a_tier_gated_format_names_the_format(audio: Path) -> None:
    error = raised(answer(403, envelope("output_format_not_allowed", param="output_format")), audio,
                   _job("mp3_44100_192"))
    assert isinstance(error, RefusedByPlanError) and error.reason == "output_format_not_allowed"
    assert "output_format mp3_44100_192" in error.message and "creator plan" in error.message


def test_a_400_audio_too_long_is_a_rejection_that_says_to_segment(audio: Path) -> None:
    error = raised(answer(400, envelope("audio_too_long")), audio)
    assert isinstance(error, RejectedError) and error.reason == "audio_too_long" and error.status == 400
    assert "STS_MAX_SEGMENT_SECONDS" in error.message and "5 minutes" in error.message


def test_a_422_keeps_its_message_prefix(audio: Path) -> None:
    body = {"detail": [{"loc": ["body", "audio"], "msg": "Field required", "type": "missing"}]}
    error = raised(answer(422, body), audio)
    assert isinstance(error, RejectedError)
    assert error.message == "the service rejected the request (422): body.audio: Field required"


@pytest.mark.parametrize(("code", "legacy", "kind"), [
    ("concurrent_limit_exceeded", "too_many_concurrent_requests", "concurrent_limit_exceeded"),
    (None, "too_many_concurrent_requests", "concurrent_limit_exceeded"),
    ("rate_limit_exceeded", None, "rate_limit_exceeded"),
    ("system_busy", None, "system_busy"),
])
def test_429_kinds_and_retry_after(audio: Path, code: str | None, legacy: str | None, kind: str) -> None:
    error = raised(answer(429, envelope(code, legacy), headers={"retry-after": "4", "request-id": "r1"}), audio)
    assert isinstance(error, RateLimitedError) and error.kind == kind and error.retry_after_s == 4.0
    assert error.response is not None and error.response.headers["retry-after"] == "4"


def test_the_request_id_falls_back_to_the_body(audio: Path) -> None:
    error = raised(answer(404, envelope("voice_not_found")), audio)
    assert isinstance(error, ApiError) and error.reason == "http_404"
    assert error.request_id == "req-from-body"
    assert error.response is not None and error.response.headers["request-id"] == "req-from-body"
    assert "the voice_id VoiceAbc123 was not found" in error.message
    with_header = raised(answer(404, envelope("voice_not_found"), headers={"request-id": "req-header"}), audio)
    assert with_header.request_id == "req-header"


def test_a_not_charged_500_bills_nothing(audio: Path) -> None:
    body = envelope("internal_server_error")
    body["detail"]["message"] = "Something broke. The request was not charged; retry it."
    error = raised(answer(500, body, headers={"character-cost": "34"}), audio)
    assert isinstance(error, TransientError) and error.reason == "http_500"
    assert billed_credits(error) == 0.0
    charged = raised(answer(502, envelope("bad_gateway"), headers={"character-cost": "34"}), audio)
    assert billed_credits(charged) == 34.0


# --- odd values and bodies

@pytest.mark.parametrize("value", ["-5", "NaN", "nan", "inf", "1e999", "-0.0001", "12abc", "", " ", "0x10",
                                   "9" * 400, "\u0663"])
def test_odd_character_costs_are_unknown_never_negative(audio: Path, value: str) -> None:
    result = call(answer(200, headers={"character-cost": value.encode()}, content=_pcm(0.2)), audio)
    assert result.character_cost is None or result.character_cost >= 0
    error = TransientError("x", response=ResponseInfo(500, {"character-cost": value}))
    assert billed_credits(error) == 0.0 or billed_credits(error) > 0  # finite, not negative
    assert 0.0 <= billed_credits(error) < float("inf")


def test_a_believable_character_cost_is_read(audio: Path) -> None:
    assert call(answer(200, headers={"character-cost": " 17 "}, content=_pcm(0.2)), audio).character_cost == 17.0


ODD_ERROR_BODIES = [b"", b"null", b"[]", b'{"detail": null}', b'{"detail": [1, "x", null]}',
                    b'{"detail": [{"loc": null, "msg": "bad"}]}', b'{"detail": "text"}', b'{"detail": 7}',
                    b'"a string"', b"12", b"{not json", b"<html><title>Blocked</title></html>", b"\x00\xff\xfe",
                    b"[" * 70_000, b'{"detail": {"code": 1, "status": null, "message": ["m"]}}']


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500])
@pytest.mark.parametrize("body", ODD_ERROR_BODIES, ids=range(len(ODD_ERROR_BODIES)))
def test_any_error_body_is_summarised(audio: Path, status: int, body: bytes) -> None:
    error = raised(answer(status, content=body, headers={"retry-after": "soon", "character-cost": "-5",
                                                         "maximum-concurrent-requests": "NaN"}), audio)
    assert error.status == status
    assert billed_credits(error) == 0.0
    assert isinstance(error.to_record(), dict)


def test_an_odd_content_length_is_not_an_exception(audio: Path) -> None:
    result = call(answer(200, headers={"content-length": "\u0663".encode()}, content=_pcm(0.2)), audio)
    assert result.bytes_written == len(_pcm(0.2))


# --- magic bytes

MP3_44K_FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + b"\x00" * 60  # MPEG-1 layer III, 128 kbps, 44.1 kHz
MP3_22K_FRAME = bytes([0xFF, 0xF3, 0x40, 0xC4]) + b"\x00" * 60  # MPEG-2 layer III, 22.05 kHz
OPUS_HEAD = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13" + b"OpusHead\x01\x01" + b"\x00" * 20
VORBIS_HEAD = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1e" + b"\x01vorbis" + b"\x00" * 30
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 60
HTML = b"<!DOCTYPE html><html><head><title>Access denied</title></head><body>blocked</body></html>"
JSON_TEXT = b'{"detail": {"code": "ok", "message": "this is not audio at all, it is json text, honestly"}}'


@pytest.mark.parametrize(("fmt", "head", "problem"), [
    ("mp3_44100_128", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 60, None),
    ("mp3_44100_128", MP3_44K_FRAME, None),
    ("mp3_22050_32", MP3_22K_FRAME, None),
    ("mp3_44100_128", MP3_22K_FRAME, "mp3 at 22050 Hz"),
    ("mp3_44100_128", WAV, "not mp3"),
    ("mp3_44100_128", HTML, "an HTML page"),
    ("mp3_44100_128", OPUS_HEAD, "not mp3"),
    ("opus_48000_64", OPUS_HEAD, None),
    ("opus_48000_64", VORBIS_HEAD, "not Opus"),
    ("opus_48000_64", MP3_44K_FRAME, "not Ogg"),
    ("pcm_16000", _pcm(0.01), None),
    ("pcm_16000", b"\x00\x00" * 40, None),
    ("pcm_16000", b"\xff\xff\xfe\xff" * 20, None),  # near silence looks like an MPEG sync word: still pcm
    ("pcm_16000", b"<\x00>\x00" * 20, None),  # samples whose low bytes are '<' and '>' are not text
    ("pcm_16000", HTML, "an HTML page"),
    ("pcm_16000", b"\xef\xbb\xbf  \n" + HTML, "an HTML page"),
    ("pcm_16000", b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "an XML document"),
    ("pcm_16000", JSON_TEXT, "JSON text"),
    ("pcm_16000", WAV, "a RIFF/WAV file"),
    ("pcm_44100", b"ID3\x04" + b"\x00" * 60, "ID3"),
    ("pcm_44100", OPUS_HEAD, "an Ogg file"),
    ("pcm_44100", b"fLaC" + b"\x00" * 60, "a FLAC file"),
    ("pcm_44100", b"\x00\x00\x00\x20ftypisom" + b"\x00" * 60, "an MP4 file"),
    ("ulaw_8000", b"\xff" * 64, None),
    ("ulaw_8000", HTML, "an HTML page"),
    ("alaw_8000", b"\xd5" * 64, None),
    ("alaw_8000", WAV, "a RIFF/WAV file"),
])
def test_sniff(fmt: str, head: bytes, problem: str | None) -> None:
    found = sniff(OUTPUT_FORMATS[fmt], head[:64])
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_a_text_content_type_is_never_audio() -> None:
    assert "text/html" in (sniff(OUTPUT_FORMATS["mp3_44100_128"], MP3_44K_FRAME, "text/html; charset=utf-8") or "")
    assert sniff(OUTPUT_FORMATS["pcm_16000"], _pcm(0.01), "application/json") is not None
    assert sniff(OUTPUT_FORMATS["pcm_16000"], _pcm(0.01), "application/octet-stream") is None


def chunked(*chunks: bytes, pause_s: float = 0.0) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        if pause_s:
            time.sleep(pause_s)


@pytest.mark.parametrize(("fmt", "body"), [("pcm_16000", HTML), ("mp3_44100_128", WAV + _pcm(0.5)),
                                           ("opus_48000_64", MP3_44K_FRAME * 100)])
def test_a_wrong_200_fails_at_its_first_bytes_and_keeps_its_cost(audio: Path, fmt: str, body: bytes) -> None:
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]  # the head arrives in small pieces

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunked(*pieces), headers={"character-cost": "9", "request-id": "r-200"})

    error = raised(handler, audio, _job(fmt), input_s=1.0, expected_output_s=1.0)
    assert isinstance(error, TransientError) and error.reason == "wrong_format" and error.status == 200
    assert error.request_id == "r-200" and billed_credits(error) == 9.0
    assert audio.with_suffix(".out").stat().st_size == 0  # nothing of it was written


def test_an_odd_number_of_pcm_bytes_is_not_pcm(audio: Path) -> None:
    error = raised(answer(200, content=_pcm(0.1) + b"\x01"), audio)
    assert isinstance(error, TransientError) and error.reason == "wrong_format"


def test_a_short_body_is_judged_at_its_end(audio: Path) -> None:
    error = raised(answer(200, content=b"<html></html>"), audio, _job("ulaw_8000"))
    assert isinstance(error, TransientError) and error.reason == "wrong_format"
    assert call(answer(200, content=_pcm(0.001)), audio).bytes_written == len(_pcm(0.001))


# --- the byte bound

def test_the_byte_bound_follows_duration_and_bitrate() -> None:
    pcm, mp3 = OUTPUT_FORMATS["pcm_16000"], OUTPUT_FORMATS["mp3_22050_32"]
    assert bytes_per_second(pcm) == 32000 and bytes_per_second(mp3) == 4000
    assert bytes_per_second(OUTPUT_FORMATS["ulaw_8000"]) == 8000
    assert byte_bound(pcm, 1.0) == (2 + 10) * 32000 + 64 * 1024
    assert byte_bound(pcm, 100.0) > 100 * 32000 * 2
    assert byte_bound(pcm, None) > byte_bound(pcm, 300.0)  # unknown: the longest the service may send


def test_a_body_that_never_ends_stops_at_the_bound(audio: Path) -> None:
    block = _pcm(1.0)  # 32,000 bytes
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(2000):  # 64 MB at most: bounded even if the client did not stop
            sent += len(block)
            yield block

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless(), headers={"character-cost": "17"})

    error = raised(handler, audio, input_s=1.0, expected_output_s=1.0)
    assert isinstance(error, TransientError) and error.reason == "oversized_response"
    bound = byte_bound(OUTPUT_FORMATS["pcm_16000"], 1.0)
    assert bound < sent <= bound + len(block) and billed_credits(error) == 17.0
    assert audio.with_suffix(".out").stat().st_size <= bound


def test_a_long_enough_body_passes_the_bound(audio: Path) -> None:
    body = _pcm(3.0)
    assert call(answer(200, content=body), audio, input_s=2.5, expected_output_s=2.5).bytes_written == len(body)


# --- the deadline

def test_a_trickling_body_ends_at_the_deadline(audio: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunked(*[b"\x00\x01"] * 40, pause_s=0.25))  # 10 s if read to the end

    started = time.monotonic()
    error = raised(handler, audio, input_s=0.5, expected_output_s=0.5, deadline_base_s=1.0, deadline_per_input_s=1.0)
    elapsed = time.monotonic() - started
    assert isinstance(error, TransientError) and error.reason == "deadline"
    assert 1.4 <= elapsed < 3.0, elapsed
    assert "deadline of 2 s" in error.message


def test_a_trickling_error_body_is_not_read_past_the_deadline(audio: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=chunked(*[b"x"] * 40, pause_s=0.25))

    started = time.monotonic()
    error = raised(handler, audio, input_s=0.5, deadline_base_s=0.5, deadline_per_input_s=0.0)
    assert isinstance(error, TransientError) and error.reason == "http_503"
    assert time.monotonic() - started < 2.0


def test_timeouts_are_sized_from_the_input(audio: Path) -> None:
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, content=_pcm(0.1))

    call(handler, audio, input_s=1.0)
    call(handler, audio, input_s=200.0)
    call(handler, audio, input_s=1.0, read_timeout_s=5.0)
    short, long, tight = seen
    assert short["read"] == pytest.approx(62.0) and long["read"] == 120.0 and tight["read"] == 5.0
    assert request_deadline_s(1.0) == 62.0 and request_deadline_s(200.0) == 460.0
    assert request_deadline_s(1.0, 50_000_000) == 112.0
    assert request_deadline_s(None) == request_deadline_s(300.0)


def test_the_guard_checks_in_order() -> None:
    guard = BodyGuard(OUTPUT_FORMATS["pcm_16000"], max_bytes=100, deadline=time.monotonic() + 60, deadline_s=60)
    guard.feed(b"\x00" * 64)
    with pytest.raises(ResponseFault) as fault:
        guard.feed(b"\x00" * 64)
    assert fault.value.reason == "oversized_response"


# --- through the attempt loop: the faults are transient, the last one fails the job, the cost stays recorded

class FreeLimiter:
    @contextmanager
    def slot(self, wait_s: float) -> Iterator[None]:
        yield None

    def observe_response(self, *args: object, **kwargs: object) -> None:
        return None


def _loop(handler: Handler, audio: Path, out: Path, job: Job, attempts: list[AttemptRecord]) -> PipelineError:
    client = StsClient("http://sts.test", "test-key-loop", transport=httpx.MockTransport(handler))
    ctx = CallContext(settings=Settings(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02), client=client,
                      limiter=FreeLimiter())  # type: ignore[arg-type]
    with pytest.raises(PipelineError) as caught:
        convert_with_retries(ctx, job, audio, out, input_s=1.0, audio_content_type="audio/wav", attempts=attempts)
    return caught.value


def test_a_wrong_format_is_retried_then_fails_with_its_costs(audio: Path, tmp_path: Path) -> None:
    attempts: list[AttemptRecord] = []
    handler = answer(200, content=HTML, headers={"character-cost": "17", "request-id": "r-html"})
    error = _loop(handler, audio, tmp_path / "out.pcm", _job(), attempts)
    assert isinstance(error, TransientError) and error.reason == "wrong_format"
    assert error.final_state.value == "failed"
    assert [(a.status, a.outcome, a.credits, a.request_id) for a in attempts] == [
        (200, "wrong_format", 17.0, "r-html")] * 2


def test_an_undecodable_body_is_a_wrong_format_not_a_bad_input(audio: Path, tmp_path: Path) -> None:
    # an MPEG frame header, then garbage: it passes the first-bytes check, and the decode after the request refuses it
    body = MP3_44K_FRAME + bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8))
    probe = tmp_path / "probe.mp3"
    probe.write_bytes(body)
    decodes = subprocess.run(["ffmpeg", "-v", "error", "-i", str(probe), "-f", "null", "-"],
                             capture_output=True).returncode == 0
    attempts: list[AttemptRecord] = []
    error = _loop(answer(200, content=body, headers={"character-cost": "17"}), audio, tmp_path / "out.mp3",
                  _job("mp3_44100_128"), attempts)
    assert isinstance(error, TransientError)
    assert error.reason == ("cut_stream" if decodes else "wrong_format")
    assert [a.credits for a in attempts] == [17.0, 17.0]
