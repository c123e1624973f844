"""Backoff delays and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.api.backoff import (
    MAX_RETRY_AFTER_S,
    backoff_delay_s,
    parse_retry_after,
    parse_retry_after_ms,
    retry_after_from_headers,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def delays(attempt: int, n: int = 2000, **kwargs: object) -> list[float]:
    rng = random.Random(7)
    params: dict = {"base_s": 1.0, "max_s": 60.0, "retry_after_s": None, **kwargs}
    return [backoff_delay_s(attempt, rng=rng, **params) for _ in range(n)]


@pytest.mark.parametrize(("attempt", "ceiling_s"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)])
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int, ceiling_s: float) -> None:
    values = delays(attempt)
    assert all(0.0 <= v <= ceiling_s for v in values)
    # full jitter spreads over the whole range, not just near the top
    assert min(values) < 0.1 * ceiling_s and max(values) > 0.9 * ceiling_s


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert 0.0 <= backoff_delay_s(10_000, base_s=1.0, max_s=5.0, retry_after_s=None, rng=random.Random(1)) <= 5.0


def test_retry_after_is_a_floor_even_above_max() -> None:
    assert all(v >= 3.0 for v in delays(1, retry_after_s=3.0))
    assert all(v == 90.0 for v in delays(1, max_s=60.0, retry_after_s=90.0, n=50))


def test_retry_after_is_capped() -> None:
    assert delays(1, retry_after_s=86_400.0, n=1) == [MAX_RETRY_AFTER_S]


def test_negative_retry_after_counts_as_zero() -> None:
    assert all(0.0 <= v <= 1.0 for v in delays(1, retry_after_s=-5.0))


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay_s(0, base_s=1.0, max_s=60.0, retry_after_s=None, rng=random.Random(1))


def test_same_seed_same_delays() -> None:
    assert delays(4, n=20) == delays(4, n=20)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:59:00 GMT", 0.0),  # a date in the past: retry now
        ("Sat, 01 Mar 2025 12:01:00 -0000", 60.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_date_against_the_real_clock() -> None:
    in_a_minute = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(in_a_minute)
    assert seconds is not None and 50.0 <= seconds <= 61.0


@pytest.mark.parametrize(("value", "expected"), [("1500", 1.5), ("0", 0.0), ("x", None), (None, None)])
def test_parse_retry_after_ms(value: str | None, expected: float | None) -> None:
    assert parse_retry_after_ms(value) == expected


def test_headers_prefer_milliseconds_and_ignore_case() -> None:
    assert retry_after_from_headers({"Retry-After-Ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after_from_headers({"RETRY-AFTER": "9"}) == 9.0
    assert retry_after_from_headers({"retry-after-ms": "junk", "retry-after": "4"}) == 4.0
    assert retry_after_from_headers({"content-type": "audio/mpeg"}) is None
