"""The speech-to-speech HTTP client: one streamed request, its response classified into our errors.

Request and response are streamed from and to files, so memory does not grow with the audio. The client makes one
attempt; retries, limits and budgets belong to ``pipeline.conversion.calls``. The API key travels only in the
``xi-api-key`` header and never appears in an exception or a returned record.

An error answer becomes a ``PipelineError`` through the one table in ``pipeline.api.problems``. A 200 is not trusted
(``pipeline.api.response``): its first bytes must start the requested format, it may not be longer than the expected
duration can take, and the whole request must end within a deadline sized from the input's duration; each such
fault is a ``TransientError`` (wrong_format, oversized_response, deadline) that carries what the response billed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline import __version__
from pipeline.api.headers import character_cost
from pipeline.api.problems import problem_from, read_body
from pipeline.api.response import (
    DEADLINE_BASE_S,
    DEADLINE_PER_INPUT_S,
    BodyGuard,
    ResponseFault,
    byte_bound,
    request_deadline_s,
)
from pipeline.config import Settings
from pipeline.errors import PipelineError, ResponseInfo, RunCancelled, TransientError, register_secret
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job
from pipeline.ops.tracing import api_request

STREAM_PATH = "/v1/speech-to-speech/{voice_id}/stream"
ERROR_BODY_LIMIT_BYTES = 64 * 1024
#: how often (seconds) a streaming body asks whether to stop (``cancel --now``): one Redis GET per stream per period
STOP_CHECK_S = 0.5
#: response headers kept in provenance
RECORDED_HEADERS = ("request-id", "history-item-id", "character-cost", "current-concurrent-requests",
                    "maximum-concurrent-requests", "content-type")
#: a kept header value longer than this is cut (a header is not a place for a novel)
HEADER_VALUE_LIMIT = 256


@dataclass
class CallResult:
    """What one successful request produced."""

    status: int
    headers: dict[str, str]
    bytes_written: int
    duration_s: float

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")

    @property
    def character_cost(self) -> float | None:
        """What the service billed; None when the header is missing or not a believable number (never negative)."""
        return character_cost(self.headers)


def _kept_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name][:HEADER_VALUE_LIMIT] for name in RECORDED_HEADERS if name in headers}


#: no connection cap of its own: the shared limiter decides how many requests are in flight, and httpx's default of
#: 100 would make a threads worker's 101st job wait out the pool timeout; idle connections kept for a cap of 64
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=64)


class StsClient:
    """One httpx client for one API base URL and key.

    ``read_timeout_s`` bounds the silence between two chunks; on top of it every request has a total deadline of
    ``deadline_base_s + deadline_per_input_s × input seconds`` (plus a second per MB uploaded), and the read
    timeout of a request is never longer than its deadline.
    """

    def __init__(self, base_url: str, api_key: str, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 120.0,
                 write_timeout_s: float = 120.0, transport: httpx.BaseTransport | None = None,
                 deadline_base_s: float = DEADLINE_BASE_S, deadline_per_input_s: float = DEADLINE_PER_INPUT_S) -> None:
        register_secret(api_key)
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._deadline_base_s = deadline_base_s
        self._deadline_per_input_s = deadline_per_input_s
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=write_timeout_s, pool=30.0)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport, limits=LIMITS,
                                  headers={"xi-api-key": api_key, "user-agent": f"sts-pipeline/{__version__}"})

    @classmethod
    def from_settings(cls, settings: Settings) -> StsClient:
        return cls(settings.api_base_url, settings.api_key_value() or "", connect_timeout_s=settings.connect_timeout_s,
                   read_timeout_s=settings.read_timeout_s, write_timeout_s=settings.write_timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deadline_s(self, input_s: float | None, upload_bytes: int = 0) -> float:
        """How long one request with ``input_s`` seconds of input (``upload_bytes`` uploaded) may take in all."""
        return request_deadline_s(input_s, upload_bytes, base_s=self._deadline_base_s,
                                  per_input_s=self._deadline_per_input_s)

    def stream(self, job: Job, audio: Path, out: Path, *, audio_content_type: str = "application/octet-stream",
               input_s: float | None = None, expected_output_s: float | None = None,
               stop: Callable[[], bool] | None = None) -> CallResult:
        """POST ``audio`` to the streaming endpoint and write the response body to ``out``.

        ``input_s`` (the input's duration) sizes the request's deadline and read timeout; ``expected_output_s``
        (the input's duration over the speed) bounds the body's size. Unknown, they default to the vendor's limits.
        ``stop`` (asked at most every ``STOP_CHECK_S`` while the body streams) abandons the request between chunks
        with ``RunCancelled`` (``cancel --now``).

        Raises a TransientError, RejectedError, AuthError, ApiError, QuotaExceededError or RefusedByPlanError
        whose ``response`` says what the service answered (``None`` when no response came).
        """
        with api_request("POST", voice_id=job.voice_id, output_format=job.output_format) as span:
            result = self._stream(job, audio, out, audio_content_type=audio_content_type, input_s=input_s,
                                  expected_output_s=expected_output_s, stop=stop)
            span.answered(result.status, result.request_id)
        return result

    def _stream(self, job: Job, audio: Path, out: Path, *, audio_content_type: str, input_s: float | None,
                expected_output_s: float | None, stop: Callable[[], bool] | None) -> CallResult:
        params: dict[str, Any] = {"output_format": job.output_format,
                                  "enable_logging": "true" if job.enable_logging else "false"}
        if job.optimize_streaming_latency is not None:
            params["optimize_streaming_latency"] = str(job.optimize_streaming_latency)
        form: dict[str, str] = {"model_id": job.model_id, "file_format": job.file_format,
                                "remove_background_noise": "true" if job.remove_background_noise else "false"}
        if job.seed is not None:
            form["seed"] = str(job.seed)
        if job.voice_settings is not None:
            form["voice_settings"] = json.dumps(job.voice_settings.model_dump(exclude_none=True))
        request = {"voice_id": job.voice_id, **{name: str(value) for name, value in params.items()}, **form}
        path = STREAM_PATH.format(voice_id=job.voice_id)
        started = time.monotonic()
        try:
            upload_bytes = audio.stat().st_size
        except OSError:
            upload_bytes = 0
        deadline_s = self.deadline_s(input_s if input_s is not None else expected_output_s, upload_bytes)
        timeout = httpx.Timeout(connect=min(self._connect_timeout_s, deadline_s),
                                read=min(self._read_timeout_s, deadline_s),
                                write=min(self._write_timeout_s, deadline_s), pool=min(30.0, deadline_s))
        try:
            with open(audio, "rb") as body:
                files = {"audio": (audio.name, body, audio_content_type)}
                with self._http.stream("POST", path, params=params, data=form, files=files,
                                       timeout=timeout) as response:
                    if response.status_code != 200:
                        raise self._error_from(response, request, started + deadline_s)
                    guard = BodyGuard(OUTPUT_FORMATS[job.output_format], byte_bound(
                        OUTPUT_FORMATS[job.output_format], expected_output_s), started + deadline_s, deadline_s,
                        response.headers.get("content-type"))
                    return self._receive(response, out, started, guard, stop)
        except httpx.TimeoutException as error:
            if time.monotonic() - started >= deadline_s:
                raise TransientError(f"the request ran past its deadline of {deadline_s:.0f} s (sized from the "
                                     f"input's duration) ({type(error).__name__})", reason="deadline") from None
            raise TransientError(f"the service timed out ({type(error).__name__})", reason="timeout") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise TransientError(f"connection to the service failed: {type(error).__name__}",
                                 reason="network") from None

    def _receive(self, response: httpx.Response, out: Path, started: float, guard: BodyGuard,
                 stop: Callable[[], bool] | None = None) -> CallResult:
        headers = _kept_headers(response.headers)
        info = ResponseInfo(200, headers)
        written = 0
        next_check = time.monotonic() + STOP_CHECK_S
        expected = response.headers.get("content-length")

        def cut(message: str) -> TransientError:
            return TransientError(message, reason="cut_stream", status=200, request_id=headers.get("request-id"),
                                  response=info)

        try:
            with open(out, "wb") as sink:
                held = b""  # the first bytes are held back until the guard has judged the format
                for chunk in response.iter_bytes():
                    if stop is not None and time.monotonic() >= next_check:
                        next_check = time.monotonic() + STOP_CHECK_S
                        if stop():
                            raise RunCancelled(f"the run was cancelled with --now: the request was abandoned "
                                               f"after {written} bytes", status=200,
                                               request_id=headers.get("request-id"), response=info)
                    written += len(chunk)
                    guard.feed(chunk)
                    if not guard.judged:
                        held += chunk
                        continue
                    sink.write(held + chunk if held else chunk)
                    held = b""
                guard.finish()
                sink.write(held)
        except ResponseFault as fault:
            raise TransientError(fault.message, reason=fault.reason, status=200, request_id=headers.get("request-id"),
                                 response=info) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.TimeoutException) as error:
            try:
                guard.check_deadline()
            except ResponseFault as fault:
                raise TransientError(fault.message, reason=fault.reason, status=200,
                                     request_id=headers.get("request-id"), response=info) from None
            raise cut(f"the audio stream was cut after {written} bytes ({type(error).__name__})") from None
        if expected is not None and expected.isascii() and expected.isdigit() and int(expected) != written:
            raise cut(f"the audio stream ended after {written} of {expected} bytes")
        if written == 0:
            raise cut("the service answered 200 with no audio")
        return CallResult(200, headers, written, time.monotonic() - started)

    @staticmethod
    def _error_from(response: httpx.Response, request: dict[str, str], deadline: float) -> PipelineError:
        raw = b""
        try:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > ERROR_BODY_LIMIT_BYTES or time.monotonic() > deadline:
                    break
        except httpx.HTTPError:
            pass
        headers = _kept_headers(response.headers)
        for name in ("retry-after", "retry-after-ms"):
            if name in response.headers:
                headers[name] = response.headers[name][:HEADER_VALUE_LIMIT]
        return problem_from(response.status_code, read_body(raw[:ERROR_BODY_LIMIT_BYTES]), headers, request=request)
