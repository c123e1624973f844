"""What an error response means for us: the one table from (HTTP status, API code) to our error classes.

The service's errors (``../shared/api/speech-to-speech.md``, *Responses and errors*) carry the current envelope

    {"detail": {"type": ..., "code": ..., "message": ..., "request_id": ..., "param": ..., "status": ...}}

where ``status`` is the legacy field, a mirror that may differ from ``code``: ``code`` is read first, ``status``
second. A 422 keeps the validation list ``{"detail": [{"loc", "msg", "type"}, ...]}``. ``detail.request_id`` stands
in for a missing ``request-id`` header.

``problem_from(status, body, headers)`` is pure: the parsed body (``read_body``) and the kept headers in, the
``PipelineError`` out. ``RULES`` is the table, one row per case, with the reference's meaning of each; it is looked
up by (status, ``code``), then (status, legacy ``status``), then (status, ``type``), then the status's catch-all,
then the 5xx family; anything else is an ``ApiError`` named ``http_<status>``. Any body is accepted: ``detail`` null,
a list of anything, a string, a number, invalid JSON, an HTML page: it is summarised, never an exception.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.api.backoff import retry_after_from_headers
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
    summarize_rejection,
)
from pipeline.formats import FORMAT_MIN_TIER, MAX_INPUT_BYTES, MAX_INPUT_SECONDS
from pipeline.reasons import Reason, http_reason
from pipeline.text import printable

__all__ = [
    "CONCURRENT_LIMIT_EXCEEDED",
    "RATE_LIMIT_EXCEEDED",
    "RULES",
    "SYSTEM_BUSY",
    "UNKNOWN_429",
    "Envelope",
    "NonJson",
    "Rule",
    "limit_kind",
    "problem_from",
    "read_body",
    "read_envelope",
    "rule_for",
]

# --- the three 429 kinds (``RateLimitedError.kind``), whatever spelling the service used
CONCURRENT_LIMIT_EXCEEDED = "concurrent_limit_exceeded"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
SYSTEM_BUSY = "system_busy"
#: a 429 that names none of the three
UNKNOWN_429 = "rate_limited"
_429_KINDS = {CONCURRENT_LIMIT_EXCEEDED: CONCURRENT_LIMIT_EXCEEDED,
              "too_many_concurrent_requests": CONCURRENT_LIMIT_EXCEEDED,  # the legacy ``status`` of the same
              RATE_LIMIT_EXCEEDED: RATE_LIMIT_EXCEEDED,
              SYSTEM_BUSY: SYSTEM_BUSY}

#: the 403 codes that say "this key's plan cannot do that request shape"
PLAN_CODES = ("output_format_not_allowed", "feature_not_available", "voice_access_denied", "model_access_denied")
#: how much of the service's own text goes into a message
_SNIPPET = 240
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NOT_CHARGED = re.compile(r"(?i)\b(?:not|never)\s+(?:been\s+)?(?:charged|billed)\b|\bno\s+charge\b|\bfree of charge\b")
#: where a quota error may say when the credits come back (none is documented; these are read if present)
_RESET_FIELDS = ("resets_at", "reset_at", "next_character_count_reset_unix", "next_reset_unix", "quota_reset_unix")
_RESET_HEADERS = ("x-quota-reset", "quota-reset", "x-ratelimit-reset")


def limit_kind(code: str | None) -> str:
    """A 429's kind from its ``code`` or legacy ``status``: concurrent_limit_exceeded (also for the legacy
    too_many_concurrent_requests), rate_limit_exceeded, system_busy, else ``rate_limited``."""
    return _429_KINDS.get(code or "", UNKNOWN_429)


@dataclass(frozen=True)
class NonJson:
    """A body that is not JSON (an HTML page, plain text, binary): its text, decoded leniently."""

    text: str


def read_body(raw: bytes) -> Any:
    """The JSON value of an error body, or ``NonJson`` when it is not JSON (never an exception)."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return NonJson(raw.decode("utf-8", errors="replace"))


def _snippet(value: Any) -> str:
    """Foreign text for a message: one line, control characters escaped, at most ``_SNIPPET`` characters."""
    text = " ".join(str(value).split())
    text = printable(text)
    return text if len(text) <= _SNIPPET else text[:_SNIPPET - 1] + "…"


def _word(value: Any) -> str | None:
    """A code-like string (``quota_exceeded``) from a field, or None for anything else."""
    return value if isinstance(value, str) and _CODE.match(value) else None


@dataclass(frozen=True)
class Envelope:
    """What an error body says, in the current envelope's terms (None where it says nothing usable)."""

    code: str | None  # detail.code, else detail.status
    legacy: str | None  # detail.status
    type: str | None
    message: str | None  # one line, ready for a message
    param: str | None
    request_id: str | None
    detail: Any  # the body's ``detail`` as sent (the 422 list, the envelope object, ...)


def read_envelope(body: Any) -> Envelope:
    """The envelope of any parsed body: ``{"detail": {...}}``, the 422 list, or whatever else came."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code, legacy = _word(detail.get("code")), _word(detail.get("status"))
        text = detail.get("message", detail.get("msg"))
        request_id = detail.get("request_id")
        param = detail.get("param")
        return Envelope(code=code or legacy, legacy=legacy, type=_word(detail.get("type")),
                        message=_snippet(text) if isinstance(text, (str, int, float)) and str(text) else None,
                        param=_snippet(param) if isinstance(param, (str, int)) and str(param) else None,
                        request_id=request_id if isinstance(request_id, str) and _REQUEST_ID.match(request_id)
                        else None, detail=detail)
    if isinstance(detail, list):
        return Envelope(None, None, None, _snippet(summarize_rejection(detail, drop_body=False, most=5)), None, None,
                        detail)
    if detail is not None and not isinstance(detail, bool):
        return Envelope(None, None, None, _snippet(detail) or None, None, None, detail)
    if isinstance(body, NonJson):
        text = body.text
        if "<" in text[:200] and re.search(r"(?i)<(?:!doctype|html|head|body|title)", text[:2000]):
            title = re.search(r"(?is)<title[^>]*>(.*?)</title>", text[:8192])
            what = "an HTML page" + (f" ({_snippet(title.group(1))})" if title and title.group(1).strip() else "")
            return Envelope(None, None, None, f"not JSON but {what}", None, None, None)
        return Envelope(None, None, None, f"not JSON: {_snippet(text[:_SNIPPET])}" if text.strip() else None,
                        None, None, None)
    if isinstance(body, dict):
        text = body.get("message", body.get("error"))
        return Envelope(_word(body.get("code")), None, None, _snippet(text) if isinstance(text, str) and text
                        else None, None, None, None)
    if body is None:
        return Envelope(None, None, None, None, None, None, None)
    return Envelope(None, None, None, _snippet(json.dumps(body, default=str))[:_SNIPPET], None, None, None)


@dataclass(frozen=True)
class Answer:
    """Everything a row's builder may use: the response, its envelope, and the request it answered."""

    status: int
    envelope: Envelope
    headers: Mapping[str, str]
    info: ResponseInfo
    request_id: str | None
    retry_after_s: float | None
    request: Mapping[str, str]
    now: float

    @property
    def code(self) -> str | None:
        return self.envelope.code

    def said(self) -> str:
        """`` (code: the service's message)`` for the end of a message, or ``""``."""
        parts = [part for part in (self.envelope.code, self.envelope.message) if part]
        return f" ({': '.join(parts)})" if parts else ""

    def value(self, name: str) -> str:
        return self.request.get(name) or "(unknown)"


@dataclass(frozen=True)
class Rule:
    """One row: the answers it covers, what it becomes, and why (the reference's words)."""

    status: int | str  # an HTTP status, or "5xx" for the family
    code: str | None  # the ``code`` (or legacy ``status``); "type:<type>" for a type; None = any other of the status
    error: type[PipelineError]
    reason: str  # the reason code the error carries (``http_<status>`` for that family)
    effect: str  # what happens to the job and the run
    meaning: str  # what the service means by it (speech-to-speech.md)
    build: Callable[[Answer], PipelineError] = field(repr=False)


# --- the builders, one per kind of row

def _auth(answer: Answer) -> PipelineError:
    return AuthError("the service refused the API key (401): set STS_API_KEY to a valid key; the run was stopped"
                     + answer.said(), status=answer.status, request_id=answer.request_id, api_status=answer.code,
                     response=answer.info)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ("the service did not say when they reset (GET /v1/user/subscription's "
                "next_character_count_reset_unix does)")
    return f"they reset at {datetime.fromtimestamp(epoch, UTC).strftime('%Y-%m-%d %H:%M UTC')}"


def _quota(answer: Answer) -> PipelineError:
    resets_at = _reset_time(answer.envelope.detail, answer.headers, answer.now)
    label = f"{answer.status} {answer.code}" if answer.code else str(answer.status)
    said = f": {answer.envelope.message}" if answer.envelope.message else ""
    return QuotaExceededError(
        f"the account's credits for this period are spent ({label}{said}); {_when(resets_at)}. This is not a bad "
        "key: nothing more is spent, and `sts-pipeline retry` finishes the rest once the credits reset or the "
        "plan's limit is raised", resets_at=resets_at, status=answer.status, request_id=answer.request_id,
        response=answer.info)


def _rejected(message: str, answer: Answer) -> RejectedError:
    return RejectedError(message, detail=answer.envelope.detail, status=answer.status, request_id=answer.request_id,
                         response=answer.info)


def _too_long(answer: Answer) -> PipelineError:
    error = _rejected(
        f"the service refused the input as too long (400 audio_too_long): the limit is "
        f"{MAX_INPUT_SECONDS / 60:g} minutes ({MAX_INPUT_SECONDS:g} s) of audio per request; segment it: set "
        f"STS_MAX_SEGMENT_SECONDS (or the line's max_segment_seconds) to {MAX_INPUT_SECONDS:g} or less so the input "
        f"is converted in segments{_tail(answer)}", answer)
    error.reason = Reason.AUDIO_TOO_LONG.value
    return error


def _too_large(answer: Answer) -> PipelineError:
    error = _rejected(
        f"the upload is over the service's limit of {MAX_INPUT_BYTES // (1024 * 1024)} MB per request "
        f"(400 request_too_large): compress the input or convert it in segments (STS_MAX_SEGMENT_SECONDS)"
        f"{_tail(answer)}", answer)
    error.reason = Reason.REQUEST_TOO_LARGE.value
    return error


def _invalid_audio(answer: Answer) -> PipelineError:
    error = _rejected(f"the service could not read the input audio (400 invalid_audio): re-export it (WAV, FLAC or "
                      f"MP3){_tail(answer)}", answer)
    error.reason = Reason.INVALID_AUDIO.value
    return error


def _tail(answer: Answer) -> str:
    return f" (the service said: {answer.envelope.message})" if answer.envelope.message else ""


def _bad_request(answer: Answer) -> PipelineError:
    label = " ".join(part for part in ("400", answer.code) if part)
    param = f" [{answer.envelope.param}]" if answer.envelope.param else ""
    return _rejected(f"the service rejected the request ({label}){param}: "
                     f"{answer.envelope.message or 'no detail'}", answer)


def _validation(answer: Answer) -> PipelineError:
    fallback = answer.envelope.message or ""
    return _rejected(f"the service rejected the request (422): "
                     f"{summarize_rejection(answer.envelope.detail, fallback, drop_body=False, most=5)}", answer)


def _plan(answer: Answer) -> PipelineError:
    code = answer.code or "output_format_not_allowed"
    if code == "output_format_not_allowed":
        fmt = answer.value("output_format")
        needs = f": it needs the {FORMAT_MIN_TIER[fmt]} plan or above" if fmt in FORMAT_MIN_TIER else ""
        text = (f"the plan does not allow output_format {fmt} (403 output_format_not_allowed){needs}; choose another "
                f"output_format for these lines, or upgrade the plan")
    elif code == "voice_access_denied":
        text = (f"this API key may not use the voice_id {answer.value('voice_id')} (403 voice_access_denied): share "
                "the voice with the key's workspace, or choose another voice_id")
    elif code == "model_access_denied":
        text = (f"this API key may not use the model_id {answer.value('model_id')} (403 model_access_denied): choose "
                "a model the plan includes (GET /v1/models), or upgrade the plan")
    else:
        param = answer.envelope.param
        asked = f"{param}={answer.request[param]}" if param and param in answer.request else (param or "a feature")
        text = (f"the plan does not include {asked} (403 feature_not_available): leave it out of these lines, or "
                "upgrade the plan")
    return RefusedByPlanError(f"{text}; every request of this shape gets the same answer{_tail(answer)}", code=code,
                              detail=answer.envelope.detail, request_id=answer.request_id, response=answer.info)


def _not_found(what: str) -> Callable[[Answer], PipelineError]:
    def build(answer: Answer) -> PipelineError:
        listing = "GET /v2/voices" if what == "voice_id" else "GET /v1/models"
        return ApiError(f"the {what} {answer.value(what)} was not found (404 {answer.code}): check the line's {what} "
                        f"({listing} lists the account's)", status=404, request_id=answer.request_id,
                        api_status=answer.code, response=answer.info)
    return build


def _api_error(answer: Answer) -> PipelineError:
    return ApiError(f"the service answered {answer.status}: {answer.envelope.message or answer.code or 'no detail'}",
                    status=answer.status, request_id=answer.request_id, api_status=answer.code, response=answer.info)


def _transient(answer: Answer) -> PipelineError:
    said = f" ({answer.code})" if answer.code else ""
    text = f": {answer.envelope.message}" if answer.envelope.message else ""
    return TransientError(f"the service answered {answer.status}{said}{text}", status=answer.status,
                          request_id=answer.request_id, retry_after_s=answer.retry_after_s,
                          reason=http_reason(answer.status), response=answer.info)


def _throttled(answer: Answer) -> PipelineError:
    kind = limit_kind(answer.envelope.code if limit_kind(answer.envelope.code) != UNKNOWN_429
                      else answer.envelope.legacy)
    text = f": {answer.envelope.message}" if answer.envelope.message else ""
    return RateLimitedError(f"the service throttled the request (429 {kind}){text}", kind=kind, status=429,
                            request_id=answer.request_id, retry_after_s=answer.retry_after_s, response=answer.info)


_REJECTED = "rejected: never retried; retry --include-rejected after fixing the line"
_FAILED_RETRIED = "retried with backoff; failed after the last attempt"
_QUOTA = "deferred (quota_exceeded); the run stops spending until the reset; retry finishes the rest"

#: the table. Order does not matter: every (status, code) key is unique (a test checks it).
RULES: tuple[Rule, ...] = (
    Rule(400, "audio_too_long", RejectedError, Reason.AUDIO_TOO_LONG.value, _REJECTED,
         "the input is over the 5 minutes a request may hold: split it, never retry", _too_long),
    Rule(400, "request_too_large", RejectedError, Reason.REQUEST_TOO_LARGE.value, _REJECTED,
         "the upload is over the 50 MB a request may hold: split or compress it, never retry", _too_large),
    Rule(400, "invalid_audio", RejectedError, Reason.INVALID_AUDIO.value, _REJECTED,
         "the input cannot be read as audio: fix the request, never retry", _invalid_audio),
    Rule(400, "type:validation_error", RejectedError, Reason.REJECTED.value, _REJECTED,
         "validation_error (e.g. invalid_parameters): fix the request", _bad_request),
    Rule(400, "type:invalid_request", RejectedError, Reason.REJECTED.value, _REJECTED,
         "invalid_request: fix the request", _bad_request),
    Rule(400, None, ApiError, http_reason(400), "failed at once (not retried)",
         "a 400 the reference does not name", _api_error),
    Rule(401, "invalid_api_key", AuthError, http_reason(401), "failed; the whole run halts (every job would fail)",
         "the key is wrong: stop the run", _auth),
    Rule(401, "quota_exceeded", QuotaExceededError, Reason.QUOTA_EXCEEDED.value, _QUOTA,
         "the key is fine but the period's credits are spent: stop spending, defer the rest until the reset", _quota),
    Rule(401, "insufficient_credits", QuotaExceededError, Reason.QUOTA_EXCEEDED.value, _QUOTA,
         "the credits, not the key (402's code, seen on a 401)", _quota),
    Rule(401, "type:billing_error", QuotaExceededError, Reason.QUOTA_EXCEEDED.value, _QUOTA,
         "a billing error of another code: the credits, not the key", _quota),
    Rule(401, None, AuthError, http_reason(401), "failed; the whole run halts",
         "any other 401 is a refused key", _auth),
    Rule(402, "insufficient_credits", QuotaExceededError, Reason.QUOTA_EXCEEDED.value, _QUOTA,
         "means the same as quota_exceeded", _quota),
    Rule(402, None, QuotaExceededError, Reason.QUOTA_EXCEEDED.value, _QUOTA,
         "payment required: the credits are spent", _quota),
    Rule(403, "output_format_not_allowed", RefusedByPlanError, Reason.OUTPUT_FORMAT_NOT_ALLOWED.value,
         "rejected; the run stops sending that output_format",
         "the plan's tier cannot use that output_format: every job asking the same gets the same answer", _plan),
    Rule(403, "feature_not_available", RefusedByPlanError, Reason.FEATURE_NOT_AVAILABLE.value,
         "rejected; the run stops sending that feature", "the plan cannot do that request", _plan),
    Rule(403, "voice_access_denied", RefusedByPlanError, Reason.VOICE_ACCESS_DENIED.value,
         "rejected; the run stops sending that voice_id", "the key may not use that voice", _plan),
    Rule(403, "model_access_denied", RefusedByPlanError, Reason.MODEL_ACCESS_DENIED.value,
         "rejected; the run stops sending that model_id", "the key may not use that model", _plan),
    Rule(403, None, ApiError, http_reason(403), "failed at once (not retried)",
         "a 403 the reference does not name", _api_error),
    Rule(404, "voice_not_found", ApiError, http_reason(404), "failed at once (not retried)",
         "no such voice in the account", _not_found("voice_id")),
    Rule(404, "model_not_found", ApiError, http_reason(404), "failed at once (not retried)",
         "no such model", _not_found("model_id")),
    Rule(404, None, ApiError, http_reason(404), "failed at once (not retried)", "not found", _api_error),
    Rule(408, None, TransientError, http_reason(408), _FAILED_RETRIED, "request timeout: retryable", _transient),
    Rule(409, None, TransientError, http_reason(409), _FAILED_RETRIED, "conflict: retryable", _transient),
    Rule(422, None, RejectedError, Reason.REJECTED.value, _REJECTED,
         "validation error (list-shaped detail): not retryable", _validation),
    Rule(429, CONCURRENT_LIMIT_EXCEEDED, RateLimitedError, Reason.RATE_LIMITED.value,
         _FAILED_RETRIED + "; the limiter lowers the shared cap (AIMD) when at it, and pauses for Retry-After",
         "more requests in flight than the plan allows: wait for a slot, lower our own concurrency", _throttled),
    Rule(429, "too_many_concurrent_requests", RateLimitedError, Reason.RATE_LIMITED.value,
         _FAILED_RETRIED + "; as concurrent_limit_exceeded", "the legacy status of concurrent_limit_exceeded",
         _throttled),
    Rule(429, RATE_LIMIT_EXCEEDED, RateLimitedError, Reason.RATE_LIMITED.value,
         _FAILED_RETRIED + "; every worker pauses for Retry-After (the cap stays)",
         "a request-rate window is full: slow down", _throttled),
    Rule(429, SYSTEM_BUSY, RateLimitedError, Reason.RATE_LIMITED.value,
         _FAILED_RETRIED + "; every worker pauses for Retry-After, then backs off (the cap stays)",
         "the service is overloaded: back off", _throttled),
    Rule(429, None, RateLimitedError, Reason.RATE_LIMITED.value, _FAILED_RETRIED + "; every worker pauses",
         "a 429 of no named kind: retryable, honour Retry-After", _throttled),
    Rule("5xx", None, TransientError, "http_<status>",
         _FAILED_RETRIED + "; a body that says it was not charged records 0 credits",
         "retryable (503 maintenance too); a 500 body can say the request was not charged", _transient),
)

_BY_KEY: dict[tuple[int | str, str | None], Rule] = {(rule.status, rule.code): rule for rule in RULES}
_OTHER = Rule("other", None, ApiError, "http_<status>", "failed at once (not retried)",
              "a status the reference does not name", _api_error)


def rule_for(status: int, envelope: Envelope) -> Rule:
    """The row that answers ``status`` with ``envelope``: by code, by legacy status, by type, then the catch-alls."""
    for key in (envelope.code, envelope.legacy, f"type:{envelope.type}" if envelope.type else None):
        if key is not None and (status, key) in _BY_KEY:
            return _BY_KEY[(status, key)]
    if (status, None) in _BY_KEY:
        return _BY_KEY[(status, None)]
    if 500 <= status <= 599:
        return _BY_KEY[("5xx", None)]
    return _OTHER


def _reset_time(detail: Any, headers: Mapping[str, str], now: float) -> float | None:
    """When a quota error says the credits come back (epoch seconds), if it says so believably."""
    candidates: list[Any] = []
    if isinstance(detail, dict):
        candidates += [detail.get(name) for name in _RESET_FIELDS]
    lowered = {str(name).lower(): value for name, value in headers.items()}
    candidates += [lowered.get(name) for name in _RESET_HEADERS]
    for value in candidates:
        epoch = _epoch(value)
        if epoch is not None and now - 86_400 <= epoch <= now + 400 * 86_400:
            return epoch
    retry_after = retry_after_from_headers(lowered)
    if retry_after:
        return now + retry_after
    return None


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    else:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number / 1000 if number > 1e11 else number  # milliseconds


def not_charged(envelope: Envelope) -> bool:
    """Whether an error body says the request was not charged."""
    detail = envelope.detail
    if isinstance(detail, dict) and detail.get("charged") is False:
        return True
    return bool(envelope.message and _NOT_CHARGED.search(envelope.message))


def problem_from(status: int, body: Any, headers: Mapping[str, str], *, request: Mapping[str, str] | None = None,
                 now: float | None = None) -> PipelineError:
    """The error an answer of ``status`` with ``body`` (``read_body``'s value) and ``headers`` (the kept ones) is.

    ``request`` names the request's fields (voice_id, model_id, output_format, ...) so messages can name the value
    the service refused. The error's ``response`` is a ``ResponseInfo`` with the headers, ``request-id`` taken from
    ``detail.request_id`` when the header is missing, ``character-cost`` set to 0 when a 5xx says it was not charged,
    and ``api_code`` = ``code``, else the legacy ``status``.
    """
    envelope = read_envelope(body)
    kept = {str(name).lower(): str(value) for name, value in headers.items()}
    if "request-id" not in kept and envelope.request_id:
        kept["request-id"] = envelope.request_id
    if status >= 500 and not_charged(envelope):
        kept["character-cost"] = "0"
    rule = rule_for(status, envelope)
    info = ResponseInfo(status, kept, envelope.code)
    answer = Answer(status=status, envelope=envelope, headers=kept, info=info, request_id=kept.get("request-id"),
                    retry_after_s=retry_after_from_headers(kept), request=dict(request or {}),
                    now=time.time() if now is None else now)
    return rule.build(answer)
