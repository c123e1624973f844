"""The shared limiter reacts to each kind of 429 as the reference says, whichever spelling the service used, and odd
header values change nothing (a real redis-server on loopback; each test flushes its database)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
import redis

from pipeline.api.limiter import Limiter, LimiterConfig


def make(client: redis.Redis, cap: int | None = 4, **kwargs: float) -> Limiter:
    return Limiter(client, uuid.uuid4().hex[:16], LimiterConfig(configured_cap=cap, requests_per_minute=None,
                                                                **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["concurrent_limit_exceeded", "too_many_concurrent_requests"])
def test_a_concurrency_429_at_the_cap_halves_it(redis_client: redis.Redis, kind: str) -> None:
    limiter = make(redis_client, lease_s=30.0)
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(limiter.slot(wait_s=1))
        limiter.observe_response(429, {"retry-after-ms": "1"}, kind)
    assert limiter.effective_cap() == 2


@pytest.mark.parametrize("kind", ["rate_limit_exceeded", "system_busy", None, "something_new"])
def test_other_429s_pause_every_worker_for_retry_after_and_keep_the_cap(redis_client: redis.Redis,
                                                                       kind: str | None) -> None:
    limiter = make(redis_client, lease_s=30.0)
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(limiter.slot(wait_s=1))
        limiter.observe_response(429, {"Retry-After": "7"}, kind)
    snapshot = limiter.snapshot()
    assert snapshot["effective_cap"] == 4
    assert 6.0 < snapshot["cooldown_remaining_s"] <= 7.0


def test_a_429_without_retry_after_pauses_for_the_default(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cooldown_default_s=3.0)
    limiter.observe_response(429, {}, "system_busy")
    assert 2.0 < limiter.snapshot()["cooldown_remaining_s"] <= 3.0


@pytest.mark.parametrize("value", ["NaN", "-3", "1e9", "3.5", "99999999999", "", "three", "\u0663"])
def test_odd_concurrency_headers_teach_nothing(redis_client: redis.Redis, value: str) -> None:
    limiter = make(redis_client, cap=None)
    limiter.observe_response(200, {"maximum-concurrent-requests": value, "current-concurrent-requests": value})
    assert limiter.snapshot()["learned_cap"] is None
    limiter.observe_response(200, {"maximum-concurrent-requests": " 5 "})
    assert limiter.snapshot()["learned_cap"] == 5


@pytest.mark.parametrize(("value", "expected_s"), [("1e999", 2.0), ("9" * 400, 600.0), ("-4", 2.0), ("soon", 2.0)])
def test_odd_retry_after_values_are_bounded(redis_client: redis.Redis, value: str, expected_s: float) -> None:
    limiter = make(redis_client, cooldown_default_s=2.0)
    limiter.observe_response(429, {"retry-after": value}, "rate_limit_exceeded")
    assert expected_s - 1.0 < limiter.snapshot()["cooldown_remaining_s"] <= expected_s
