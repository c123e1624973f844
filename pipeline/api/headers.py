"""The service's numeric headers, read defensively: an odd value is *unknown*, never an exception or a negative.

A proxy, a bug or an attacker can put anything in a header (``character-cost: -5``, ``NaN``, ``1e999``, ``12abc``,
a megabyte of digits). Whoever reads a number from a response reads it here, so one odd value can never kill a job,
park a worker or credit the budget back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["MAX_CONCURRENCY", "MAX_CREDITS", "character_cost", "header_count", "header_number", "header_value"]

#: a ``character-cost`` above this is not believed (5 minutes of audio cost 5,000 credits at the published rate)
MAX_CREDITS = 10_000_000.0
#: a concurrency header above this is not believed (the published plans stop at 15; enterprise is "higher")
MAX_CONCURRENCY = 10_000
#: longer header values are not parsed at all
_MAX_TEXT = 64


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` in any letter case, or None."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((item for key, item in headers.items() if key.lower() == lowered), None)


def header_number(value: object, *, maximum: float) -> float | None:
    """A finite number in ``[0, maximum]`` from a header value; None when absent, unreadable, negative or too big."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_TEXT:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0 or number > maximum:
        return None
    return number


def header_count(value: object, *, maximum: int = MAX_CONCURRENCY) -> int | None:
    """A whole number in ``[0, maximum]`` (``"3"``, not ``"3.5"``, ``"-1"`` or ``"1e3"``); None otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_TEXT or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= maximum else None


def character_cost(headers: Mapping[str, str]) -> float | None:
    """What a response says it billed (``character-cost``): a finite, non-negative number of credits, or None."""
    return header_number(header_value(headers, "character-cost"), maximum=MAX_CREDITS)
