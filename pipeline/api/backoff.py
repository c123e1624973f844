"""Retry delays: exponential backoff with full jitter that never undercuts the server's Retry-After.

Pure functions; the caller owns the clock and the random generator, so tests are exact.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_RETRY_AFTER_S",
    "backoff_delay_s",
    "parse_retry_after",
    "parse_retry_after_ms",
    "retry_after_from_headers",
]

#: longest Retry-After we obey; a larger hint (or a far-future date) is treated as this, so one bad header cannot
#: park a worker for hours
MAX_RETRY_AFTER_S = 600.0

#: 2**60 already exceeds any sane max_s; the cap keeps ``2.0 ** n`` from overflowing at absurd attempt numbers
_MAX_EXPONENT = 60

_SECONDS = re.compile(r"^\d+(\.\d+)?$")


def backoff_delay_s(
    attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Full jitter: uniform(0, min(max_s, base_s * 2**(attempt-1))). A server's Retry-After is a floor: the delay is
    never shorter than it, and may exceed ``max_s`` because of it, but Retry-After itself is capped at
    ``MAX_RETRY_AFTER_S``.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling_s = min(max_s, base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    delay_s = rng.uniform(0.0, max(ceiling_s, 0.0))
    if retry_after_s is not None:
        delay_s = max(delay_s, min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S))
    return delay_s


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date. None if absent or unreadable.

    A date in the past gives 0; a longer wait than ``MAX_RETRY_AFTER_S`` (a far-future date, a number with hundreds
    of digits) gives ``MAX_RETRY_AFTER_S``. ``now`` defaults to the current UTC time.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.match(text):
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated zone; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return min(max(0.0, (when - reference).total_seconds()), MAX_RETRY_AFTER_S)


def parse_retry_after_ms(value: str | None) -> float | None:
    """Seconds from a ``retry-after-ms`` value (milliseconds, as the vendor's SDK reads it). None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not _SECONDS.match(text):
        return None
    return min(float(text) / 1000.0, MAX_RETRY_AFTER_S)


def retry_after_from_headers(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The server's wait hint in seconds: ``retry-after-ms`` if readable, else ``Retry-After``. Names in any case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    from_ms = parse_retry_after_ms(lowered.get("retry-after-ms"))
    if from_ms is not None:
        return from_ms
    return parse_retry_after(lowered.get("retry-after"), now)
