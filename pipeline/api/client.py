"""The speech-to-speech HTTP client: one streamed request, its response classified into our errors.

Request and response are streamed from and to files, so memory does not grow with the audio. The client makes one
attempt; retries, limits and budgets belong to ``pipeline.conversion.calls``. The API key travels only in the ``xi-api-key``
header and never appears in an exception or a returned record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline import __version__
from pipeline.api.backoff import retry_after_from_headers
from pipeline.config import Settings
from pipeline.errors import (
    ApiError,
    AuthError,
    PipelineError,
    RateLimitedError,
    RejectedError,
    ResponseInfo,
    TransientError,
    register_secret,
    summarize_rejection,
)
from pipeline.manifest.job import Job

STREAM_PATH = "/v1/speech-to-speech/{voice_id}/stream"
ERROR_BODY_LIMIT_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: response headers kept in provenance
RECORDED_HEADERS = ("request-id", "history-item-id", "character-cost", "current-concurrent-requests",
                    "maximum-concurrent-requests", "content-type")


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
        value = self.headers.get("character-cost")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


def _kept_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name] for name in RECORDED_HEADERS if name in headers}


class StsClient:
    """One httpx client for one API base URL and key."""

    def __init__(self, base_url: str, api_key: str, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 120.0,
                 write_timeout_s: float = 120.0, transport: httpx.BaseTransport | None = None) -> None:
        register_secret(api_key)
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=write_timeout_s, pool=30.0)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
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

    def stream(self, job: Job, audio: Path, out: Path, *, audio_content_type: str = "application/octet-stream"
               ) -> CallResult:
        """POST ``audio`` to the streaming endpoint and write the response body to ``out``.

        Raises a TransientError, RejectedError, AuthError or ApiError whose ``response`` says what the service
        answered (``None`` when no response came).
        """
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
        path = STREAM_PATH.format(voice_id=job.voice_id)
        started = time.monotonic()
        try:
            with open(audio, "rb") as body:
                files = {"audio": (audio.name, body, audio_content_type)}
                with self._http.stream("POST", path, params=params, data=form, files=files) as response:
                    if response.status_code != 200:
                        raise self._error_from(response)
                    return self._receive(response, out, started)
        except httpx.TimeoutException as error:
            raise TransientError(f"the service timed out ({type(error).__name__})", reason="timeout") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise TransientError(f"connection to the service failed: {type(error).__name__}",
                                 reason="network") from None

    def _receive(self, response: httpx.Response, out: Path, started: float) -> CallResult:
        headers = _kept_headers(response.headers)
        info = ResponseInfo(200, headers)
        written = 0
        expected = response.headers.get("content-length")

        def cut(message: str) -> TransientError:
            return TransientError(message, reason="cut_stream", status=200, request_id=headers.get("request-id"),
                                  response=info)

        try:
            with open(out, "wb") as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.TimeoutException) as error:
            raise cut(f"the audio stream was cut after {written} bytes ({type(error).__name__})") from None
        if expected is not None and expected.isdigit() and int(expected) != written:
            raise cut(f"the audio stream ended after {written} of {expected} bytes")
        if written == 0:
            raise cut("the service answered 200 with no audio")
        return CallResult(200, headers, written, time.monotonic() - started)

    @staticmethod
    def _error_from(response: httpx.Response) -> PipelineError:
        status = response.status_code
        headers = _kept_headers(response.headers)
        request_id = headers.get("request-id")
        raw = b""
        try:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > ERROR_BODY_LIMIT_BYTES:
                    break
        except httpx.HTTPError:
            pass
        try:
            body: Any = json.loads(raw[:ERROR_BODY_LIMIT_BYTES] or b"null")
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        api_status = detail.get("status") if isinstance(detail, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else None
        info = ResponseInfo(status, headers, api_status)
        retry_after = retry_after_from_headers(response.headers)
        if status == 422:
            return RejectedError(f"the service rejected the request (422): {summarize_rejection(detail, drop_body=False, most=5)}",
                                 detail=detail, request_id=request_id, response=info)
        if status == 429:
            kind = api_status or "rate_limited"
            return RateLimitedError(f"the service throttled the request (429 {kind})", kind=kind, status=429,
                                    request_id=request_id, retry_after_s=retry_after, response=info)
        if status in RETRYABLE_STATUSES or status >= 500:
            return TransientError(f"the service answered {status}" + (f" ({api_status})" if api_status else ""),
                                  status=status, request_id=request_id, retry_after_s=retry_after,
                                  reason=f"http_{status}", response=info)
        if status == 401:
            return AuthError("the service refused the API key (401): set STS_API_KEY to a valid key; "
                             "the run was stopped", status=401, request_id=request_id, api_status=api_status,
                             response=info)
        return ApiError(f"the service answered {status}: {message or api_status or 'no detail'}",
                        status=status, request_id=request_id, api_status=api_status, response=info)

