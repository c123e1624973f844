"""A run's credit budget against a real redis-server: the arithmetic, concurrent reservations, expiry."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from pipeline.errors import BudgetExceededError
from pipeline.run.budget import Budget


def test_reserve_settle_release_arithmetic(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-1")
    budget.set_limit(100.0)
    first, second = budget.reserve(40.0), budget.reserve(40.0)
    assert (budget.spent(), budget.reserved(), budget.limit()) == (0.0, 80.0, 100.0)
    with pytest.raises(BudgetExceededError, match="budget of 100.0"):
        budget.reserve(30.0)
    budget.settle(first, 50.0)  # billed more than estimated
    assert (budget.spent(), budget.reserved()) == (50.0, 40.0)
    budget.release(second)  # failed before billing
    assert (budget.spent(), budget.reserved()) == (50.0, 0.0)
    budget.reserve(50.0)  # exactly reaches the limit
    with pytest.raises(BudgetExceededError):
        budget.reserve(0.01)


def test_unlimited_budget_still_keeps_the_books(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-2")
    assert budget.limit() is None
    reservations = [budget.reserve(1e6) for _ in range(3)]
    assert budget.reserved() == 3e6
    for reservation in reservations:
        budget.settle(reservation, 10.5)
    assert (budget.spent(), budget.reserved()) == (31.5, 0.0)
    budget.set_limit(40.0)
    with pytest.raises(BudgetExceededError):
        budget.reserve(10.0)
    budget.set_limit(None)
    assert budget.limit() is None
    budget.reserve(10.0)


def test_fractional_estimates_fill_the_limit_exactly(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-3")
    budget.set_limit(1.0)
    for _ in range(10):
        budget.reserve(0.1)
    with pytest.raises(BudgetExceededError):
        budget.reserve(0.1)


def test_concurrent_reservations_never_exceed_the_limit(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-4")
    budget.set_limit(100.0)
    granted: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        # every thread its own instance, as every worker process has one
        mine = Budget(redis_client, "run-4")
        for _ in range(10):
            try:
                reservation = mine.reserve(3.0)
            except BudgetExceededError:
                continue
            with lock:
                granted.append(reservation.estimate)
            mine.settle(reservation, 3.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 99.0  # 33 of 80 attempts fit, no more
    assert budget.spent() == 99.0 and budget.reserved() == 0.0


def test_overshoot_is_bounded_by_costs_beyond_estimates(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-5")
    budget.set_limit(100.0)
    in_flight = [budget.reserve(25.0) for _ in range(4)]
    for reservation in in_flight:
        budget.settle(reservation, 30.0)  # each billed 5 over its estimate
    assert budget.spent() == 120.0  # limit + 4 x 5, nothing more
    with pytest.raises(BudgetExceededError):
        budget.reserve(0.0001)


def test_abandoned_reservation_expires_and_a_late_settle_still_counts(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-6", reservation_ttl_s=0.5)
    budget.set_limit(10.0)
    abandoned = budget.reserve(10.0)
    with pytest.raises(BudgetExceededError):
        budget.reserve(1.0)
    time.sleep(0.8)
    assert budget.reserved() == 0.0
    budget.reserve(4.0)
    budget.settle(abandoned, 6.0)  # the holder was only slow: what it was billed counts
    assert (budget.spent(), budget.reserved()) == (6.0, 4.0)


def test_runs_are_separate_and_keys_expire(redis_client: redis.Redis) -> None:
    small, other = Budget(redis_client, "run-7"), Budget(redis_client, "run-8")
    small.set_limit(1.0)
    other.reserve(5.0)
    assert small.reserved() == 0.0 and other.limit() is None
    keys = [k.decode() for k in redis_client.keys("sts:budget:*")]
    assert sorted(keys) == ["sts:budget:{run-7}", "sts:budget:{run-8}:exp", "sts:budget:{run-8}:res"]
    assert all(0 < redis_client.ttl(key) <= 7 * 24 * 3600 for key in keys)


def test_rejects_nonsense(redis_client: redis.Redis) -> None:
    budget = Budget(redis_client, "run-9")
    with pytest.raises(ValueError):
        budget.reserve(-1.0)
    with pytest.raises(ValueError):
        budget.set_limit(-5.0)
    with pytest.raises(ValueError):
        Budget(redis_client, "bad {run}")
