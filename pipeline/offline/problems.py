"""The offline server's error answers, in the vendor's current envelope (see docs/offline-server.md, *Errors*).

Every error but a 422 is one ``Problem``: an HTTP status, a ``code`` (what a client should read first), a ``type``,
the legacy ``status`` mirror (what older clients read; it may differ from ``code``), a message and the parameter at
fault. It renders as::

    {"detail": {"type": ..., "code": ..., "message": ..., "request_id": ..., "param": ..., "status": ...}}

with the ``request-id`` header (unless the ``omit_error_request_id`` knob is on), ``Retry-After`` on 429 and
``character-cost: 0`` on 5xx. A 422 (form or query validation) keeps the FastAPI list shape
``{"detail": [{"type", "loc", "msg", "input"}, ...]}``: ``Invalid``.

This module depends on nothing of the pipeline's client: the server answers with its own types.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse


@dataclass(frozen=True)
class Kind:
    """What a ``code`` always comes with."""

    status: int
    type: str
    legacy: str


#: every code the server answers with, and its HTTP status, type and legacy ``status``
KINDS: dict[str, Kind] = {
    "audio_too_long": Kind(400, "validation_error", "audio_too_long"),
    "request_too_large": Kind(400, "validation_error", "request_too_large"),
    "invalid_parameters": Kind(400, "validation_error", "invalid_parameters"),
    "invalid_audio": Kind(400, "invalid_request", "invalid_audio"),
    "invalid_request": Kind(400, "invalid_request", "invalid_request"),
    "invalid_api_key": Kind(401, "authentication_error", "invalid_api_key"),
    "quota_exceeded": Kind(401, "billing_error", "quota_exceeded"),
    "output_format_not_allowed": Kind(403, "authorization_error", "output_format_not_allowed"),
    "forbidden": Kind(403, "authorization_error", "forbidden"),
    "voice_not_found": Kind(404, "not_found", "voice_not_found"),
    "model_not_found": Kind(404, "not_found", "model_not_found"),
    "not_found": Kind(404, "not_found", "not_found"),
    "method_not_allowed": Kind(405, "invalid_request", "method_not_allowed"),
    "concurrent_limit_exceeded": Kind(429, "rate_limit_error", "too_many_concurrent_requests"),
    "rate_limit_exceeded": Kind(429, "rate_limit_error", "rate_limit_exceeded"),
    "system_busy": Kind(429, "rate_limit_error", "system_busy"),
    "internal_server_error": Kind(500, "internal_error", "internal_server_error"),
    "maintenance": Kind(503, "service_unavailable", "maintenance"),
}


def new_request_id() -> str:
    """32 hex digits, unique per request."""
    return uuid.uuid4().hex


class Problem(Exception):
    """One error answer; raise it from a handler, or render it with ``response``."""

    def __init__(self, code: str, message: str, *, param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.kind = KINDS[code]
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return self.kind.status

    def body(self, request_id: str) -> dict[str, Any]:
        return {"detail": {"type": self.kind.type, "code": self.code, "message": self.message,
                           "request_id": request_id, "param": self.param, "status": self.kind.legacy}}

    def response(self, request_id: str, headers: Mapping[str, str] | None = None, *,
                 omit_request_id_header: bool = False) -> JSONResponse:
        all_headers = {**(headers or {}), "request-id": request_id}
        if omit_request_id_header:
            del all_headers["request-id"]
        if self.retry_after_s is not None:
            all_headers["retry-after"] = str(self.retry_after_s)
        if self.status >= 500:
            all_headers["character-cost"] = "0"
        return JSONResponse(self.body(request_id), status_code=self.status, headers=all_headers)


class Invalid(Exception):
    """422: the query or form failed validation; ``problems`` are FastAPI-shaped items, every one found."""

    status = 422

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems[0]["msg"] if problems else "the request is invalid")
        self.problems = problems

    def response(self, request_id: str, headers: Mapping[str, str] | None = None, *,
                 omit_request_id_header: bool = False) -> JSONResponse:
        all_headers = dict(headers or {})
        if not omit_request_id_header:
            all_headers["request-id"] = request_id
        return JSONResponse({"detail": self.problems}, status_code=422, headers=all_headers)


def problem_item(loc: tuple[str, ...], msg: str, *, kind: str = "value_error", value: Any = None) -> dict[str, Any]:
    """One FastAPI-shaped 422 item."""
    return {"type": kind, "loc": list(loc), "msg": msg, "input": value}


# --- the codes' usual messages

def invalid_api_key() -> Problem:
    return Problem("invalid_api_key", "Invalid API key: send a valid key in the xi-api-key header.")


def voice_not_found(voice_id: str) -> Problem:
    return Problem("voice_not_found", f"A voice with the voice_id {voice_id} was not found. GET /v2/voices lists the "
                   f"account's voices.", param="voice_id")


def quota_exceeded(limit: int, used: int, needed: int) -> Problem:
    return Problem("quota_exceeded", f"This request exceeds your quota of {limit}. You have {max(0, limit - used)} "
                   f"credits remaining, while {needed} credits are required for this request. The request was not "
                   f"charged.")


def not_charged(code: str, what: str) -> Problem:
    """A 5xx: the service failed; the request was not charged and may be retried."""
    return Problem(code, f"{what} The request was not charged; retry it.")
