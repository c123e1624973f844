"""The shared limiter against a real redis-server: threads and separate OS processes contending for one cap,
dead holders, lease renewal, 429 cool-downs, learned caps, AIMD, the rpm window and bounded waits.

The rpm tests shorten ``LimiterConfig.rpm_window_s`` (production keeps 60 s) so a window passes in seconds.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import pytest
import redis

from pipeline.api.limiter import FREED_TOKENS_KEPT, Limiter, LimiterConfig, key_id_for
from pipeline.errors import SlotUnavailableError
from pipeline.local.services import LocalStack

KEY_ID = key_id_for("test-api-key-not-real")

# Counts simultaneous holders across processes. KEYS[1] current holders, KEYS[2] highest seen.
TRACK_LUA = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""

# argv: redis_url key_id cap rounds hold_s. Three threads per process; all processes start together.
CONTENDER = f"""
import sys, threading, time, redis
from pipeline.api.limiter import Limiter, LimiterConfig
url, key_id, cap, rounds, hold_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
r = redis.Redis.from_url(url)
track = r.register_script({TRACK_LUA!r})
limiter = Limiter(r, key_id, LimiterConfig(configured_cap=cap, requests_per_minute=None))

def work():
    for _ in range(rounds):
        with limiter.slot(wait_s=60):
            track(keys=["test:holders", "test:max"])
            time.sleep(hold_s)
            r.decr("test:holders")
        r.incr("test:done")

r.incr("test:ready")
while int(r.get("test:ready")) < 2:
    time.sleep(0.01)
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
"""

# argv: redis_url key_id lease_s. Takes the only slot, says so, then hangs until killed.
HOLDER = """
import sys, time, redis
from pipeline.api.limiter import Limiter, LimiterConfig
r = redis.Redis.from_url(sys.argv[1])
limiter = Limiter(r, sys.argv[2], LimiterConfig(configured_cap=1, requests_per_minute=None, lease_s=float(sys.argv[3])))
with limiter.slot(wait_s=30):
    r.set("test:held", 1)
    time.sleep(600)
"""


def make(client: redis.Redis, cap: int | None = None, **kwargs: float | int | None) -> Limiter:
    return Limiter(client, KEY_ID, LimiterConfig(configured_cap=cap, requests_per_minute=kwargs.pop("rpm", None),
                                                 **kwargs))  # type: ignore[arg-type]


def wait_until(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_cap_holds_under_eight_contending_threads(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=3)
    lock = threading.Lock()
    holders = 0
    highest = 0
    done = 0
    errors: list[BaseException] = []

    def work() -> None:
        nonlocal holders, highest, done
        try:
            for _ in range(4):
                with limiter.slot(wait_s=30):
                    with lock:
                        holders += 1
                        highest = max(highest, holders)
                    time.sleep(0.1)
                    with lock:
                        holders -= 1
                with lock:
                    done += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert done == 32
    assert highest == 3  # never more than the cap, and the cap was actually reached
    assert limiter.in_flight() == 0


def test_two_processes_share_one_cap(redis_client: redis.Redis, stack: LocalStack) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, stack.redis_url, KEY_ID, "2", "4", "0.1"])
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert int(redis_client.get("test:done") or 0) == 24
    # six contenders, each process alone would fill both slots: the cap is shared and reached, never exceeded
    assert int(redis_client.get("test:max") or 0) == 2
    assert make(redis_client, cap=2).in_flight() == 0


def test_slot_of_a_killed_process_is_freed_within_one_lease(redis_client: redis.Redis, stack: LocalStack) -> None:
    lease_s = 2.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, stack.redis_url, KEY_ID, str(lease_s)])
    try:
        wait_until(lambda: redis_client.get("test:held") is not None)
        # let at least one renewal happen, so the lease being freed is a renewed one
        time.sleep(lease_s / 3 + 0.3)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    killed_at = time.monotonic()
    limiter = make(redis_client, cap=1, lease_s=lease_s)
    assert limiter.in_flight() == 1
    with limiter.slot(wait_s=lease_s + 10):
        freed_after_s = time.monotonic() - killed_at
    assert freed_after_s <= lease_s + 1.5


def test_renewal_keeps_a_slot_longer_than_its_lease(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=1, lease_s=1.0)
    with limiter.slot(wait_s=1) as lease:
        time.sleep(2.5)
        with pytest.raises(SlotUnavailableError):
            with limiter.slot(wait_s=0):
                pass
        assert limiter.in_flight() == 1
    assert lease.lost is False
    assert limiter.in_flight() == 0
    with limiter.slot(wait_s=0):
        pass


def test_lost_lease_is_reported_and_the_request_goes_on(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=1, lease_s=0.6)
    with limiter.slot(wait_s=1) as lease:
        redis_client.delete(f"sts:lim:{{{KEY_ID}}}:leases")  # as if Redis lost it
        wait_until(lambda: lease.lost, timeout_s=5)
    assert limiter.in_flight() == 0


def test_slot_unavailable_after_wait(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=1)
    with limiter.slot(wait_s=1):
        started = time.monotonic()
        with pytest.raises(SlotUnavailableError, match="slots are in use"):
            with limiter.slot(wait_s=0.5):
                pass
        waited_s = time.monotonic() - started
    assert 0.45 <= waited_s < 5.0


def test_a_waiter_is_woken_by_a_release_not_by_its_poll(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=1, poll_s=20.0)  # a poll would take 10-30 s: only the wake-up can be quick
    asked: list[float] = []
    acquire = limiter._acquire
    limiter._acquire = lambda **kw: (asked.append(time.monotonic()), acquire(**kw))[1]  # type: ignore[method-assign]
    got: list[float] = []

    def waiter() -> None:
        with limiter.slot(wait_s=60):
            got.append(time.monotonic())

    with limiter.slot(wait_s=1):
        threads = [threading.Thread(target=waiter) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(asked) >= 4, timeout_s=5)  # the holder's, then each waiter's first ask
        time.sleep(0.5)
        released = time.monotonic()
    for thread in threads:
        thread.join(timeout=10)
    assert len(got) == 3 and got[0] - released < 1.0 and got[-1] - released < 2.0
    assert len(asked) <= 1 + 3 * 2  # each waiter asked at most once more per release it saw: no polling


def test_a_slot_freed_without_a_release_is_found_by_the_poll(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=1, poll_s=0.2)
    with limiter.slot(wait_s=1):
        redis_client.delete(f"sts:lim:{{{KEY_ID}}}:leases")  # the holder's lease gone with no release (expired)
        started = time.monotonic()
        with limiter.slot(wait_s=5):
            assert time.monotonic() - started < 2.0


def test_release_tokens_nobody_waits_for_do_not_pile_up(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=2)
    for _ in range(40):
        with limiter.slot(wait_s=1):
            pass
    assert redis_client.llen(f"sts:lim:{{{KEY_ID}}}:freed") == FREED_TOKENS_KEPT
    assert 0 < redis_client.pttl(f"sts:lim:{{{KEY_ID}}}:freed") <= 60_000


def test_cooldown_after_429_delays_every_worker(redis_client: redis.Redis) -> None:
    worker_a, worker_b = make(redis_client, cap=5), make(redis_client, cap=5)
    with worker_a.slot(wait_s=1):
        worker_a.observe_response(429, {"Retry-After": "2", "content-type": "application/json"}, "system_busy")
    assert 1.0 < worker_b.snapshot()["cooldown_remaining_s"] <= 2.0
    # a wait shorter than the cool-down gives up at once instead of sleeping through it
    started = time.monotonic()
    with pytest.raises(SlotUnavailableError, match="cool-down"):
        with worker_b.slot(wait_s=0.5):
            pass
    assert time.monotonic() - started < 0.4
    with worker_b.slot(wait_s=10):
        waited_s = time.monotonic() - started
    assert waited_s >= 1.5


def test_cooldown_uses_the_default_and_is_never_shortened(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=5, cooldown_default_s=3.0)
    limiter.observe_response(429, {}, "system_busy")
    assert 2.0 < limiter.snapshot()["cooldown_remaining_s"] <= 3.0
    limiter.observe_response(429, {"retry-after-ms": "100"}, "system_busy")
    assert limiter.snapshot()["cooldown_remaining_s"] > 2.0


def test_first_request_only_until_the_cap_is_learned(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker_a, worker_b = make(redis_client), make(redis_client)
    assert worker_a.effective_cap() == 1
    with worker_a.slot(wait_s=1):
        with pytest.raises(SlotUnavailableError):
            with worker_b.slot(wait_s=0.2):
                pass
        caplog.set_level(logging.INFO, logger="pipeline.api.limiter")
        headers = {"maximum-concurrent-requests": "4", "current-concurrent-requests": "1"}
        worker_a.observe_response(200, headers)
        worker_b.observe_response(200, headers)  # same news from another worker: not logged again
        assert worker_b.effective_cap() == 4
        with ExitStack() as stack:
            for _ in range(3):
                stack.enter_context(worker_b.slot(wait_s=1))
            assert worker_b.in_flight() == 4
    learned = [r for r in caplog.records if "reports a cap of 4" in r.getMessage()]
    assert len(learned) == 1
    assert KEY_ID in learned[0].getMessage()


def test_effective_cap_is_the_smaller_of_configured_and_learned(redis_client: redis.Redis) -> None:
    configured_3, configured_10 = make(redis_client, cap=3), make(redis_client, cap=10)
    configured_3.observe_response(200, {"Maximum-Concurrent-Requests": "5"})
    assert configured_3.effective_cap() == 3
    assert configured_10.effective_cap() == 5
    configured_10.observe_response(200, {"maximum-concurrent-requests": "2"})  # plan changed
    assert configured_3.effective_cap() == 2
    assert configured_10.snapshot()["learned_cap"] == 2


def test_aimd_halves_at_the_cap_and_climbs_back_slowly(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.api.limiter")
    limiter = make(redis_client, cap=4, lease_s=30.0)
    too_many = {"retry-after-ms": "1"}
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(limiter.slot(wait_s=1))
        limiter.observe_response(429, too_many, "too_many_concurrent_requests")
        assert limiter.effective_cap() == 2
        limiter.observe_response(429, too_many, "too_many_concurrent_requests")
        assert limiter.effective_cap() == 2  # at most one decrease per lease period
    # additive increase: +1 after as many successes as the cap, never above the configured cap
    for expected in (2, 3):
        for _ in range(expected - 1):
            limiter.observe_response(200, {})
            assert limiter.effective_cap() == expected
        limiter.observe_response(200, {})
        assert limiter.effective_cap() == expected + 1
    for _ in range(20):
        limiter.observe_response(200, {})
    assert limiter.effective_cap() == 4
    assert limiter.snapshot()["aimd_cap"] is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lowered to 2" in m for m in messages) == 1
    assert sum("raised" in m for m in messages) == 2


def test_aimd_does_not_decrease_below_the_cap_unless_the_service_says_it_is_full(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=6)
    with limiter.slot(wait_s=1):
        limiter.observe_response(429, {"retry-after-ms": "1"}, "too_many_concurrent_requests")
        assert limiter.effective_cap() == 6  # we hold 1 of 6: someone else uses the key, nothing says we are full
        limiter.observe_response(
            429,
            {"retry-after-ms": "1", "current-concurrent-requests": "4", "maximum-concurrent-requests": "4"},
            "too_many_concurrent_requests",
        )
        assert limiter.effective_cap() == 2  # learned 4, then halved: the service is at its cap
    assert limiter.snapshot()["learned_cap"] == 4


def test_system_busy_pauses_but_does_not_lower_the_cap(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=2)
    with limiter.slot(wait_s=1), limiter.slot(wait_s=1):
        limiter.observe_response(429, {"retry-after-ms": "1"}, "system_busy")
    assert limiter.effective_cap() == 2


def test_rpm_window_is_shared_and_waits_until_it_frees(redis_client: redis.Redis) -> None:
    # 60 rpm over a 2 s window: 2 request starts in any 2 s
    worker_a = make(redis_client, cap=10, rpm=60, rpm_window_s=2.0)
    worker_b = make(redis_client, cap=10, rpm=60, rpm_window_s=2.0)
    started = time.monotonic()
    with worker_a.slot(wait_s=1):
        pass
    with worker_b.slot(wait_s=1):
        pass
    assert worker_a.snapshot()["rpm_used"] == 2
    with pytest.raises(SlotUnavailableError, match="requests-per-minute"):
        with worker_a.slot(wait_s=0.2):
            pass
    with worker_b.slot(wait_s=10):
        waited_s = time.monotonic() - started
    assert waited_s >= 1.9


def test_rpm_allowance_scales_with_the_window() -> None:
    assert LimiterConfig(configured_cap=None, requests_per_minute=30).rpm_allowance() == 30
    assert LimiterConfig(configured_cap=None, requests_per_minute=30, rpm_window_s=4.0).rpm_allowance() == 2
    assert LimiterConfig(configured_cap=None, requests_per_minute=1, rpm_window_s=1.0).rpm_allowance() == 1
    assert LimiterConfig(configured_cap=None, requests_per_minute=None).rpm_allowance() == 0


def test_redis_keys_name_a_hash_never_the_api_key(redis_client: redis.Redis) -> None:
    limiter = make(redis_client, cap=2, rpm=100)
    with limiter.slot(wait_s=1):
        limiter.observe_response(429, {"maximum-concurrent-requests": "2"}, "system_busy")
        keys = sorted(k.decode() for k in redis_client.keys("*"))
        assert all(redis_client.ttl(key) > 0 for key in keys)  # nothing outlives its use for ever
    assert keys == [f"sts:lim:{{{KEY_ID}}}:{name}" for name in ("cooldown", "leases", "rpm", "state")]
    with pytest.raises(ValueError):
        Limiter(redis_client, "sk_live not hashed", LimiterConfig(configured_cap=1, requests_per_minute=None))
