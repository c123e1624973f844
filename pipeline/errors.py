"""The pipeline's exceptions: one root, split by what the caller should do next.

    PipelineError                      every error the library raises on purpose; ``response`` holds what the service
    │                                  answered (status, kept headers, API code) when the error came from a response
    ├── ConfigError                    settings are missing or inconsistent; fix the environment
    ├── ManifestError                  a manifest cannot be read at all (a bad *line* is a ManifestProblem, not one)
    │   └── FeedError                  a podcast feed, or one of its enclosures, cannot be read or is refused (a
    │                                  ``file:`` URL, a private address, not audio, over the size bound)
    ├── ConditionFailed                a conditional S3 write found the object there (If-None-Match) or changed
    │                                  (If-Match); the caller decides who won, a job never ends with it
    ├── RecordError                    a record in S3 is not one this version reads (wrong schema or version)
    ├── RunConflict                    the run cannot be changed now (e.g. a retry while its jobs still run)
    ├── BrokerError                    Redis (broker or live state) did not answer a command that needs it
    ├── RunStateLost                   a waiting command lost the run's live state (Redis restarted empty, flushed, or
    │                                  unreachable too long); the run's outcome is still in S3: reconcile, then retry
    ├── TransientError                 worth retrying: network faults, timeouts, 408/409/429/5xx, a cut stream
    │   ├── RateLimitedError           429 from the service (``kind`` = too_many_concurrent_requests | system_busy)
    │   └── StorageUnavailableError    the S3 endpoint did not answer or answered 5xx
    ├── PermanentError                 retrying cannot help: fail this job now
    │   ├── InputError                 the input object is missing, empty, not audio, or over a configured limit
    │   ├── ApiError                   400/403/404 (and other non-retryable statuses) from the service
    │   │   └── AuthError              401: the API key is wrong; the whole run should stop
    │   └── DeliveryLimitError         the job was delivered more often than allowed (poison message)
    ├── RejectedError                  the service refused the request itself (422 validation; 400 audio_too_long,
    │   │                              invalid_audio, request_too_large); ``detail`` keeps the API's body
    │   └── RefusedByPlanError         403: this key's plan cannot do that request shape (a tier-gated format, a
    │                                  feature, a voice or model it may not use); every job asking the same is refused
    ├── RunCancelled                   the run was cancelled (``sts-pipeline cancel``): the job spends nothing more
    └── Deferred                       not an error of the job: it was not started (budget reached, no limiter slot);
        ├── BudgetExceededError        the run's credit budget would be crossed
        ├── QuotaExceededError         401 quota_exceeded / 402: the account's credits are spent until the reset
        └── SlotUnavailableError       no concurrency slot within the bounded wait; re-queue the job

Every error knows the state a job ends in when it is final (``final_state``: failed, rejected, deferred or cancelled)
and its ``reason`` code (listed in ``pipeline.reasons``).

Messages say what was wrong and what to do. They never contain the API key or any other secret:
``redact`` is applied to every message built from foreign text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.reasons import Reason, http_reason
from pipeline.states import JobState

__all__ = [
    "ApiError",
    "AuthError",
    "BrokerError",
    "BudgetExceededError",
    "ConditionFailed",
    "ConfigError",
    "Deferred",
    "DeliveryLimitError",
    "FeedError",
    "InputError",
    "ManifestError",
    "PermanentError",
    "PipelineError",
    "QuotaExceededError",
    "RateLimitedError",
    "RecordError",
    "RefusedByPlanError",
    "RejectedError",
    "ResponseInfo",
    "RunCancelled",
    "RunConflict",
    "RunStateLost",
    "SlotUnavailableError",
    "StorageUnavailableError",
    "TransientError",
    "redact",
    "redact_value",
    "register_secret",
    "summarize_rejection",
]

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that ``redact`` removes it from any text this process produces."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


#: what looks like a secret even when it was never registered: ``(pattern, replacement)``, applied in order
_SECRET_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # an xi-api-key header value (a run of key characters, not the words of a message about the header)
    (re.compile(r"(?i)(xi-api-key['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9_.~+/=-]{12,}"), r"\1***"),
    # presigned-URL credentials: the signature, the session token and the access key id in the query
    (re.compile(r"(?i)(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s\"'<>]+"), r"\1***"),
    # vendor keys (sk_...) and AWS access key ids
    (re.compile(r"\bsk_[A-Za-z0-9]{16,}"), "***"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
    # a long token given to a word that names a secret: api_key=..., "token": "...", Authorization: Bearer ...
    # (the ':' or '=' is required, so a key such as s3://b/tokenizer-output-2024.pcm is left alone)
    (re.compile(r"(?i)\b([\w-]*(?:api[_-]?key|access[_-]?key|secret|token|password|passwd|authorization|"
                r"credentials?|signature)[\w-]*['\"]?\s*[:=]\s*['\"]?(?:bearer\s+)?)"
                r"[A-Za-z0-9+/_.~-]{16,}=*"), r"\1***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9+/_.~-]{16,}=*"), r"\1***"),
)


def redact(text: str) -> str:
    """Replace every registered secret, and anything shaped like a key, token or URL signature, with ``***``."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """A JSON-able value with ``redact`` applied to every string in it, keys included (for the API's bodies)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(key)): redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


@dataclass(frozen=True)
class ResponseInfo:
    """What a response that ended in an error told us: for the limiter's feedback and for provenance."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: the API's error code (``detail.code``, else the legacy ``detail.status``)
    api_code: str | None = None


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    #: short machine-readable reason, used to group failures in reports (see ``pipeline.reasons``)
    reason: str = Reason.ERROR.value
    #: the state a job ends in when this error is final
    final_state: JobState = JobState.FAILED

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None,
                 response: ResponseInfo | None = None) -> None:
        super().__init__(redact(message))
        self.status = status
        self.request_id = request_id
        self.response = response

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_record(self) -> dict[str, Any]:
        """The JSON-able form stored in failure records and provenance."""
        return {
            "error_class": type(self).__name__,
            "reason": self.reason,
            "message": self.message,
            "status": self.status,
            "request_id": self.request_id,
        }


class ConfigError(PipelineError):
    reason = Reason.CONFIG.value


class ManifestError(PipelineError):
    reason = Reason.MANIFEST.value


class FeedError(ManifestError):
    """A feed or an enclosure that cannot be read or is refused; ``from-feed`` reports the item and goes on."""


class ConditionFailed(PipelineError):
    reason = Reason.CONDITION_FAILED.value


class RecordError(PipelineError):
    reason = Reason.UNREADABLE_RECORD.value


class RunConflict(PipelineError):
    reason = Reason.RUN_CONFLICT.value


class BrokerError(PipelineError):
    reason = Reason.BROKER.value


class RunStateLost(PipelineError):
    reason = Reason.RUN_STATE_LOST.value


class TransientError(PipelineError):
    """A fault worth retrying. ``retry_after_s`` is the server's hint, if it gave one."""

    reason = Reason.TRANSIENT.value

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        reason: str | None = None,
        response: ResponseInfo | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id, response=response)
        self.retry_after_s = retry_after_s
        if reason:
            self.reason = reason


class RateLimitedError(TransientError):
    reason = Reason.RATE_LIMITED.value

    def __init__(self, message: str, *, kind: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind


class StorageUnavailableError(TransientError):
    reason = Reason.STORAGE_UNAVAILABLE.value


class PermanentError(PipelineError):
    reason = Reason.PERMANENT.value


class InputError(PermanentError):
    """The input cannot be converted; ``reason`` says why (missing_input, empty_input, not_audio, too_large, ...)."""

    def __init__(self, message: str, *, reason: str = Reason.BAD_INPUT.value) -> None:
        super().__init__(message)
        self.reason = str(reason)


class ApiError(PermanentError):
    reason = Reason.API_ERROR.value

    def __init__(self, message: str, *, status: int, request_id: str | None = None, api_status: str | None = None,
                 response: ResponseInfo | None = None) -> None:
        super().__init__(message, status=status, request_id=request_id, response=response)
        self.api_status = api_status
        self.reason = http_reason(status)

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "api_status": self.api_status}


class AuthError(ApiError):
    """401: the key is wrong. Every job of the run would fail the same way, so the run stops."""


class DeliveryLimitError(PermanentError):
    reason = Reason.DELIVERY_LIMIT.value


class RejectedError(PipelineError):
    """422: the service validated the request and refused it. Never retried; ``detail`` is the API's list."""

    reason = Reason.REJECTED.value
    final_state = JobState.REJECTED

    def __init__(self, message: str, *, detail: Any, status: int = 422, request_id: str | None = None,
                 response: ResponseInfo | None = None) -> None:
        super().__init__(message, status=status, request_id=request_id, response=response)
        self.detail = detail

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "detail": redact_value(self.detail)}


class RefusedByPlanError(RejectedError):
    """403: the key's plan cannot do this request shape; ``reason`` is the API's code (output_format_not_allowed…)."""

    def __init__(self, message: str, *, code: str, detail: Any = None, request_id: str | None = None,
                 response: ResponseInfo | None = None) -> None:
        super().__init__(message, detail=detail, status=403, request_id=request_id, response=response)
        self.reason = code


class RunCancelled(PipelineError):
    """The run was cancelled before this job (or its next request) started: it ends ``cancelled``."""

    reason = Reason.CANCELLED.value
    final_state = JobState.CANCELLED


class Deferred(PipelineError):
    """The job was not started; it is neither failed nor done."""

    reason = Reason.DEFERRED.value
    final_state = JobState.DEFERRED


class BudgetExceededError(Deferred):
    reason = Reason.BUDGET.value


class QuotaExceededError(Deferred):
    """The account's credits for the period are spent (401 quota_exceeded, 402): nothing more is spent until
    ``resets_at`` (epoch seconds, when the service said), and what is left is deferred for ``retry``."""

    reason = Reason.QUOTA_EXCEEDED.value

    def __init__(self, message: str, *, resets_at: float | None = None, status: int | None = None,
                 request_id: str | None = None, response: ResponseInfo | None = None) -> None:
        super().__init__(message, status=status, request_id=request_id, response=response)
        self.resets_at = resets_at


class SlotUnavailableError(Deferred):
    reason = Reason.NO_SLOT.value


def summarize_rejection(detail: Any, fallback: str = "", *, drop_body: bool = True, most: int | None = None) -> str:
    """The API's 422 ``detail`` in one line: ``field.path: message; ...`` for a validation list, else its message.

    Any JSON shape is accepted (a ``loc`` of null, items that are not objects). ``drop_body`` leaves out the
    ``body`` that starts every form field's path; ``most`` keeps only the first items.
    """
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail[:most]:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = item.get("loc")
            path = [str(part) for part in loc] if isinstance(loc, list) else []
            if drop_body and path[:1] == ["body"]:
                path = path[1:]
            text = str(item.get("msg") or item.get("message") or json.dumps(item, sort_keys=True))
            parts.append(f"{'.'.join(path)}: {text}" if path else text)
        return "; ".join(parts)
    if isinstance(detail, dict) and (detail.get("message") or detail.get("msg")):
        return str(detail.get("message") or detail.get("msg"))
    if isinstance(detail, str) and detail:
        return detail
    return fallback or "rejected by the API (422) without a detail"
