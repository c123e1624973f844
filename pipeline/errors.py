"""The pipeline's exceptions: one root, split by what the caller should do next.

    PipelineError                      every error the library raises on purpose
    ├── ConfigError                    settings are missing or inconsistent; fix the environment
    ├── ManifestError                  a manifest cannot be read at all (a bad *line* is a ManifestProblem, not an error)
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
    ├── RejectedError                  422 from the service: the request itself is wrong; ``detail`` keeps the API's body
    └── Deferred                       not an error of the job: it was not started (budget reached, no limiter slot);
        ├── BudgetExceededError        the run's credit budget would be crossed
        └── SlotUnavailableError       no concurrency slot within the bounded wait; re-queue the job

Messages say what was wrong and what to do. They never contain the API key or any other secret:
``redact`` is applied to every message built from foreign text.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ApiError",
    "AuthError",
    "BudgetExceededError",
    "ConfigError",
    "Deferred",
    "DeliveryLimitError",
    "InputError",
    "ManifestError",
    "PermanentError",
    "PipelineError",
    "RateLimitedError",
    "RejectedError",
    "RunStateLost",
    "SlotUnavailableError",
    "StorageUnavailableError",
    "TransientError",
    "redact",
    "register_secret",
]

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that ``redact`` removes it from any text this process produces."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Replace every registered secret, and anything shaped like an ``xi-api-key`` header value, with ``***``."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(?i)(xi-api-key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", r"\1***", text)


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    #: short machine-readable reason, used to group failures in reports
    reason: str = "error"

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(redact(message))
        self.status = status
        self.request_id = request_id

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
    reason = "config"


class ManifestError(PipelineError):
    reason = "manifest"


class RunStateLost(PipelineError):
    reason = "run_state_lost"


class TransientError(PipelineError):
    """A fault worth retrying. ``retry_after_s`` is the server's hint, if it gave one."""

    reason = "transient"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.retry_after_s = retry_after_s
        if reason:
            self.reason = reason


class RateLimitedError(TransientError):
    reason = "rate_limited"

    def __init__(self, message: str, *, kind: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind


class StorageUnavailableError(TransientError):
    reason = "storage_unavailable"


class PermanentError(PipelineError):
    reason = "permanent"


class InputError(PermanentError):
    """The input cannot be converted; ``reason`` says why (missing_input, empty_input, not_audio, too_large, ...)."""

    def __init__(self, message: str, *, reason: str = "bad_input") -> None:
        super().__init__(message)
        self.reason = reason


class ApiError(PermanentError):
    reason = "api_error"

    def __init__(self, message: str, *, status: int, request_id: str | None = None, api_status: str | None = None) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.api_status = api_status
        self.reason = f"http_{status}"

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "api_status": self.api_status}


class AuthError(ApiError):
    """401: the key is wrong. Every job of the run would fail the same way, so the run stops."""


class DeliveryLimitError(PermanentError):
    reason = "delivery_limit"


class RejectedError(PipelineError):
    """422: the service validated the request and refused it. Never retried; ``detail`` is the API's list."""

    reason = "rejected"

    def __init__(self, message: str, *, detail: Any, status: int = 422, request_id: str | None = None) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.detail = detail

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "detail": self.detail}


class Deferred(PipelineError):
    """The job was not started; it is neither failed nor done."""

    reason = "deferred"


class BudgetExceededError(Deferred):
    reason = "budget"


class SlotUnavailableError(Deferred):
    reason = "no_slot"
