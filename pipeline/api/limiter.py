"""The request limiter shared by every worker process on every host: one concurrency cap and one requests-per-minute
limit per API key, kept in Redis and changed only by atomic Lua scripts that read the Redis server's clock.

Celery's own ``rate_limit`` is per worker instance, so it cannot enforce a per-key cap across hosts. Instead each
request holds a *lease* in a sorted set: the member is a random token and the score is the lease's expiry in server
milliseconds. A daemon thread renews the lease while the request runs. A process that dies while holding a slot
stops renewing, and the slot comes free within one lease.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from pipeline._redis import is_hash_tag_safe, text
from pipeline.api.backoff import MAX_RETRY_AFTER_S, retry_after_from_headers
from pipeline.api.headers import header_count
from pipeline.api.problems import CONCURRENT_LIMIT_EXCEEDED, limit_kind
from pipeline.config import Settings
from pipeline.errors import SlotUnavailableError

__all__ = ["Lease", "Limiter", "LimiterConfig", "key_id_for"]

#: how long the shared state (learned cap, AIMD cap) outlives the last response that touched it
STATE_TTL_S = 7 * 24 * 3600
#: the multiplicative decrease applied to the effective cap after a concurrency 429 at the cap
DECREASE_FACTOR = 0.5
#: release tokens kept for waiters (``Limiter._release``): beyond this nobody was waiting for them
FREED_TOKENS_KEPT = 16
#: the most a waiter adds to the end of a cool-down or rpm wait, so that the waiting workers do not all ask at once
WAKE_JITTER_S = 0.05

# Shared Lua prelude. Not a script by itself: it is prepended to the scripts below so that they all compute the
# effective cap the same way.
#   now_ms()                     Redis server time in milliseconds
#   ceiling(state, configured)   min(configured cap, learned cap); nil while neither is known (configured 0 = none)
#   effective(state, configured) min(ceiling, AIMD cap), at least 1; exactly 1 while the ceiling is unknown
_LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ceiling(state, configured)
  local cap = nil
  if configured > 0 then cap = configured end
  local learned = tonumber(redis.call('HGET', state, 'learned_cap'))
  if learned and learned > 0 and (cap == nil or learned < cap) then cap = learned end
  return cap
end
local function effective(state, configured)
  local cap = ceiling(state, configured)
  if cap == nil then return 1 end
  local aimd = tonumber(redis.call('HGET', state, 'aimd_cap'))
  if aimd and aimd < cap then cap = aimd end
  if cap < 1 then cap = 1 end
  return cap
end
local function extend_ttl(key, ttl_ms)
  -- only ever lengthen: workers configured with a shorter lease must not expire others' longer leases
  if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
end
"""

# Take a slot if no cool-down is in force, the effective cap has room and the rpm window has budget.
# KEYS[1] leases ZSET   KEYS[2] cooldown STRING   KEYS[3] rpm ZSET   KEYS[4] state HASH
# ARGV[1] token   ARGV[2] lease_ms   ARGV[3] configured cap (0 = none)   ARGV[4] requests allowed per window (0 = no
# limit)   ARGV[5] window_ms
# Returns {1, 'ok', cap, in_flight, now_ms} or {0, reason, wait_ms, cap, in_flight} with reason cooldown|cap|rpm
# (wait_ms: how long until that reason clears, 0 if unknown).
ACQUIRE_LUA = _LUA_PRELUDE + """
local now = now_ms()
local lease_ms = tonumber(ARGV[2])
local cap = effective(KEYS[4], tonumber(ARGV[3]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[1])
local cooldown_ms = redis.call('PTTL', KEYS[2])
if cooldown_ms > 0 then return {0, 'cooldown', cooldown_ms, cap, in_flight} end
if in_flight >= cap then return {0, 'cap', 0, cap, in_flight} end
local allowed = tonumber(ARGV[4])
local window_ms = tonumber(ARGV[5])
if allowed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window_ms)
  if redis.call('ZCARD', KEYS[3]) >= allowed then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, 'rpm', math.max(1, tonumber(oldest[2]) + window_ms - now + 1), cap, in_flight}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  extend_ttl(KEYS[3], window_ms)
end
redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
extend_ttl(KEYS[1], 2 * lease_ms)
return {1, 'ok', cap, in_flight + 1, now}
"""

# Give a slot back and wake one waiter: a token on the freed LIST, which a waiting worker BLPOPs (only a lease that
# was still held wakes anyone; the list is trimmed, so tokens nobody waited for cannot pile up).
# KEYS[1] leases ZSET   KEYS[2] freed LIST   ARGV[1] token   ARGV[2] most tokens kept   ARGV[3] the list's TTL (ms)
# Returns 1 if the lease was held, 0 if it was gone.
RELEASE_LUA = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return removed
"""

# Extend a held lease by lease_ms from now. A lease past its expiry counts as lost even if not yet swept.
# KEYS[1] leases ZSET   ARGV[1] token   ARGV[2] lease_ms
# Returns 1 if renewed, 0 if the lease was gone.
RENEW_LUA = _LUA_PRELUDE + """
local now = now_ms()
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if expiry == nil then return 0 end
if expiry <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
extend_ttl(KEYS[1], 2 * tonumber(ARGV[2]))
return 1
"""

# Learn from one API response: the plan's cap, a shared cool-down after a 429, and the AIMD cap.
# KEYS[1] state HASH   KEYS[2] cooldown STRING   KEYS[3] leases ZSET
# ARGV[1] HTTP status   ARGV[2] maximum-concurrent-requests (0 = absent)   ARGV[3] current-concurrent-requests
# (-1 = absent)   ARGV[4] 1 if a concurrency 429 (concurrent_limit_exceeded, legacy too_many_concurrent_requests)
# ARGV[5] cool-down ms (0 = none)
# ARGV[6] configured cap (0 = none)   ARGV[7] lease_ms   ARGV[8] state TTL ms   ARGV[9] decrease factor
# Returns {learned cap before, after (0 = unknown), effective cap before, after, cool-down ms set (0 = none),
# AIMD step taken (-1 decrease, 1 increase, 0 none)}.
OBSERVE_LUA = _LUA_PRELUDE + """
local now = now_ms()
local status = tonumber(ARGV[1])
local maximum = tonumber(ARGV[2])
local configured = tonumber(ARGV[6])
local lease_ms = tonumber(ARGV[7])
local cap_before = effective(KEYS[1], configured)
local learned_before = tonumber(redis.call('HGET', KEYS[1], 'learned_cap')) or 0
if maximum > 0 and maximum ~= learned_before then redis.call('HSET', KEYS[1], 'learned_cap', maximum) end
local top = ceiling(KEYS[1], configured)
local aimd = tonumber(redis.call('HGET', KEYS[1], 'aimd_cap'))
if aimd and (top == nil or aimd >= top) then
  redis.call('HDEL', KEYS[1], 'aimd_cap')
  aimd = nil
end
local cooldown_set = 0
local step = 0
if status == 429 then
  redis.call('HSET', KEYS[1], 'successes', 0)
  local cooldown_ms = tonumber(ARGV[5])
  if cooldown_ms > 0 and redis.call('PTTL', KEYS[2]) < cooldown_ms then
    redis.call('SET', KEYS[2], now + cooldown_ms, 'PX', cooldown_ms)
    cooldown_set = cooldown_ms
  end
  if ARGV[4] == '1' then
    local cap = effective(KEYS[1], configured)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    local at_cap = redis.call('ZCARD', KEYS[3]) >= cap or (maximum > 0 and tonumber(ARGV[3]) >= maximum)
    local last = tonumber(redis.call('HGET', KEYS[1], 'decreased_at_ms')) or 0
    local lowered = math.max(1, math.floor(cap * tonumber(ARGV[9])))
    if at_cap and lowered < cap and now - last >= lease_ms then
      redis.call('HSET', KEYS[1], 'aimd_cap', lowered, 'decreased_at_ms', now)
      step = -1
    end
  end
elseif status >= 200 and status < 300 and aimd then
  -- additive increase: +1 after as many successes as the current cap (one "window" of requests)
  if redis.call('HINCRBY', KEYS[1], 'successes', 1) >= aimd then
    redis.call('HSET', KEYS[1], 'successes', 0)
    step = 1
    if aimd + 1 >= top then redis.call('HDEL', KEYS[1], 'aimd_cap')
    else redis.call('HSET', KEYS[1], 'aimd_cap', aimd + 1) end
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]))
local learned_after = tonumber(redis.call('HGET', KEYS[1], 'learned_cap')) or 0
return {learned_before, learned_after, cap_before, effective(KEYS[1], configured), cooldown_set, step}
"""

# Read-only view for status and benchmarks.
# KEYS[1] leases ZSET   KEYS[2] cooldown STRING   KEYS[3] rpm ZSET   KEYS[4] state HASH
# ARGV[1] configured cap (0 = none)   ARGV[2] window_ms
# Returns {effective cap, learned cap (0 = unknown), AIMD cap (0 = none), in flight, cool-down ms left, rpm used}.
SNAPSHOT_LUA = _LUA_PRELUDE + """
local now = now_ms()
return {
  effective(KEYS[4], tonumber(ARGV[1])),
  tonumber(redis.call('HGET', KEYS[4], 'learned_cap')) or 0,
  tonumber(redis.call('HGET', KEYS[4], 'aimd_cap')) or 0,
  redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'),
  math.max(0, redis.call('PTTL', KEYS[2])),
  redis.call('ZCOUNT', KEYS[3], '(' .. (now - tonumber(ARGV[2])), '+inf'),
}
"""


def key_id_for(api_key: str) -> str:
    """The limiter's name for an API key: a short SHA-256 digest, so the key itself never reaches Redis or logs."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass
class LimiterConfig:
    """Limits for one API key. All processes sharing a key should use the same values."""

    configured_cap: int | None  # None: no configured cap; learn it from the service
    requests_per_minute: int | None  # None: no rpm limit
    lease_s: float = 60.0  # a slot's lease; renewed every lease_s/3 while held
    cooldown_default_s: float = 2.0  # shared pause after a 429 without Retry-After
    #: while every slot is taken a waiter sleeps on the freed list, woken by the next release; this (jittered) is
    #: the longest it sleeps before asking again, for slots that come free without a release (a lease that expired,
    #: a cap that rose)
    poll_s: float = 0.25
    #: the sliding window the rpm limit is enforced over, allowing requests_per_minute * rpm_window_s / 60 requests
    #: in any window (at least 1). 60 s in production; tests shorten it.
    rpm_window_s: float = 60.0

    def rpm_allowance(self) -> int:
        """Requests allowed in one rpm window; 0 = no limit."""
        if self.requests_per_minute is None:
            return 0
        return max(1, int(self.requests_per_minute * self.rpm_window_s / 60.0))


@dataclass
class Lease:
    """One held slot. ``lost`` turns True if a renewal found the lease gone; the request goes on regardless."""

    token: str
    lost: bool = False


class Limiter:
    """Concurrency cap, requests-per-minute limit and shared 429 cool-down for one API key, across all workers.

    Redis keys (``{kid}`` is the key id, a hash of the API key; the braces make it a cluster hash tag so that
    every script's keys share a slot):

    - ``sts:lim:{kid}:leases``   ZSET  member = lease token, score = lease expiry (server ms). In flight = members
      not yet expired. TTL 2 × lease, lengthened on every acquire and renewal.
    - ``sts:lim:{kid}:rpm``      ZSET  member = lease token, score = start time (server ms); a sliding log of the
      request starts within the rpm window. TTL one window.
    - ``sts:lim:{kid}:cooldown`` STRING  set (value = end, server ms) for the length of the cool-down after a 429;
      its PTTL is the time left. Only ever lengthened.
    - ``sts:lim:{kid}:freed``    LIST  one token per slot given back (at most ``FREED_TOKENS_KEPT``), for a waiter
      to BLPOP: a waiting worker wakes when a slot comes free instead of polling. TTL one lease.
    - ``sts:lim:{kid}:state``    HASH  ``learned_cap`` (from ``maximum-concurrent-requests``), ``aimd_cap`` (present
      only while AIMD holds the cap below its ceiling), ``successes`` (2xx since the last change),
      ``decreased_at_ms`` (last multiplicative decrease). TTL ``STATE_TTL_S`` from the last response.

    Effective cap = min(configured cap, learned cap, AIMD cap), at least 1; exactly 1 while neither a configured
    nor a learned cap is known, so the first response teaches the cap without overshooting.
    """

    def __init__(
        self, redis: redis.Redis, key_id: str, config: LimiterConfig, *, logger: logging.Logger | None = None
    ) -> None:
        if not is_hash_tag_safe(key_id):
            raise ValueError("key_id must be a non-empty hash of the API key (key_id_for), without spaces or braces")
        self._redis = redis
        self._config = config
        self._log = logger or logging.getLogger(__name__)
        self._key_id = key_id
        prefix = f"sts:lim:{{{key_id}}}"
        self._leases_key = f"{prefix}:leases"
        self._rpm_key = f"{prefix}:rpm"
        self._cooldown_key = f"{prefix}:cooldown"
        self._state_key = f"{prefix}:state"
        self._freed_key = f"{prefix}:freed"
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._give_back = redis.register_script(RELEASE_LUA)
        self._observe = redis.register_script(OBSERVE_LUA)
        self._snapshot = redis.register_script(SNAPSHOT_LUA)
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis) -> Limiter:
        """The limiter of the settings' API key, with the settings' limits (every process builds it the same way)."""
        return cls(client, key_id_for(settings.api_key_value() or ""), LimiterConfig(
            configured_cap=settings.max_concurrent_requests, requests_per_minute=settings.requests_per_minute,
            lease_s=settings.lease_s, cooldown_default_s=settings.cooldown_default_s))

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self._config.lease_s * 1000))

    @property
    def _configured(self) -> int:
        return self._config.configured_cap or 0

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[Lease]:
        """Wait (bounded) for: no cool-down in force, rpm budget, and a free slot under the effective cap; hold the
        lease (renewed by a daemon thread every lease_s/3 while the block runs); release in finally. Raises
        pipeline.errors.SlotUnavailableError if nothing was free within wait_s (the caller re-queues the job)."""
        lease = self._acquire_within(wait_s)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_until_stopped, args=(lease, stop), name=f"lease-renewer-{lease.token[:8]}", daemon=True
        )
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join(timeout=self._config.lease_s)
            self._release(lease)

    def observe_response(self, status: int, headers: Mapping[str, str], api_status: str | None = None) -> None:
        """Called after every API response (success or error), while the request's slot is still held.

        Learns the plan's cap from ``maximum-concurrent-requests`` (effective cap = min(configured, learned)). A 429
        is told apart by its kind (``api_status``: the body's ``detail.code``, else its legacy ``detail.status``;
        see ``pipeline.api.problems.limit_kind``), as the reference asks:

        - ``concurrent_limit_exceeded`` (legacy ``too_many_concurrent_requests``): more in flight than the plan
          allows. While at the cap, the effective cap is halved (floor 1, at most once per lease period), and every
          worker pauses for Retry-After.
        - ``rate_limit_exceeded``: a request-rate window is full: every worker pauses for Retry-After (the seconds
          until the window has room); the cap stays.
        - ``system_busy`` (or a 429 of no known kind): the service is overloaded: every worker pauses for
          Retry-After (the task's own retry backs off on top); the cap stays.

        The pause is Retry-After / retry-after-ms (capped at ``MAX_RETRY_AFTER_S``), else ``cooldown_default_s``. On
        a 2xx a lowered cap rises by 1 after as many successes as the cap, never above the configured/learned cap.
        Header values that are not believable numbers count as absent. Each change is logged once, by the process
        whose response caused it.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        maximum = header_count(lowered.get("maximum-concurrent-requests"))
        current = header_count(lowered.get("current-concurrent-requests"))
        kind = limit_kind(api_status) if status == 429 else None
        cooldown_ms = 0
        if status == 429:
            retry_after_s = retry_after_from_headers(lowered)
            if retry_after_s is None:
                retry_after_s = self._config.cooldown_default_s
            cooldown_ms = int(min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S) * 1000)
        reply = self._observe(
            keys=[self._state_key, self._cooldown_key, self._leases_key],
            args=[
                status,
                maximum or 0,
                -1 if current is None else current,
                1 if kind == CONCURRENT_LIMIT_EXCEEDED else 0,
                cooldown_ms,
                self._configured,
                self._lease_ms,
                STATE_TTL_S * 1000,
                DECREASE_FACTOR,
            ],
        )
        learned_before, learned_after, cap_before, cap_after, cooldown_set_ms, aimd_step = (int(v) for v in reply)
        if learned_after != learned_before:
            self._log.info(
                "limiter %s: the service reports a cap of %d concurrent requests (was %s); effective cap %d",
                self._key_id, learned_after, learned_before or "unknown", cap_after,
            )
        if aimd_step < 0:
            self._log.warning(
                "limiter %s: 429 %s at the cap: effective cap lowered to %d", self._key_id, kind, cap_after
            )
        elif aimd_step > 0:
            self._log.info("limiter %s: effective cap raised %d -> %d", self._key_id, cap_before, cap_after)
        if cooldown_set_ms:
            self._log.info(
                "limiter %s: 429 %s: every worker pauses %.1f s", self._key_id, kind, cooldown_set_ms / 1000
            )

    def effective_cap(self) -> int:
        """The cap in force now, for all workers together."""
        return int(self.snapshot()["effective_cap"])

    def in_flight(self) -> int:
        """Slots held now (unexpired leases), across all workers."""
        return int(self.snapshot()["in_flight"])

    def snapshot(self) -> dict[str, Any]:
        """The limiter's shared state, for status and benchmarks."""
        window_ms = int(self._config.rpm_window_s * 1000)
        reply = self._snapshot(
            keys=[self._leases_key, self._cooldown_key, self._rpm_key, self._state_key],
            args=[self._configured, window_ms],
        )
        cap, learned, aimd, in_flight, cooldown_ms, rpm_used = (int(v) for v in reply)
        return {
            "key_id": self._key_id,
            "effective_cap": cap,
            "configured_cap": self._config.configured_cap,
            "learned_cap": learned or None,
            "aimd_cap": aimd or None,
            "in_flight": in_flight,
            "cooldown_remaining_s": cooldown_ms / 1000,
            "rpm_used": rpm_used,
            "rpm_allowance": self._config.rpm_allowance() or None,
            "rpm_window_s": self._config.rpm_window_s,
        }

    def _acquire_within(self, wait_s: float) -> Lease:
        deadline = time.monotonic() + wait_s
        while True:
            token = secrets.token_hex(16)
            reply = self._acquire(
                keys=[self._leases_key, self._cooldown_key, self._rpm_key, self._state_key],
                args=[token, self._lease_ms, self._configured, self._config.rpm_allowance(),
                      int(self._config.rpm_window_s * 1000)],
            )
            if int(reply[0]) == 1:
                return Lease(token=token)
            reason = text(reply[1])
            wait_hint_s = int(reply[2]) / 1000
            remaining_s = deadline - time.monotonic()
            if reason == "cap" and remaining_s > 0:
                self._await_release(min(self._config.poll_s * self._rng.uniform(0.5, 1.5), remaining_s))
                continue
            if remaining_s <= 0 or wait_hint_s > remaining_s:
                raise SlotUnavailableError(
                    f"no request slot for API key {self._key_id} within {wait_s:.1f} s ({_describe(reason, reply)});"
                    " the job goes back to the queue"
                )
            # the cool-down / rpm window ends at a known time; the jitter keeps waiting workers from waking at once
            time.sleep(min(wait_hint_s + WAKE_JITTER_S * self._rng.uniform(0.0, 1.0), remaining_s))

    def _renew_until_stopped(self, lease: Lease, stop: threading.Event) -> None:
        while not stop.wait(self._config.lease_s / 3):
            try:
                renewed = int(self._renew(keys=[self._leases_key], args=[lease.token, self._lease_ms]))
            except redis.RedisError as exc:
                # the lease may still be valid; try again at the next interval
                self._log.warning("limiter %s: lease renewal failed (%s); retrying", self._key_id, exc)
                continue
            if not renewed:
                lease.lost = True
                self._log.warning(
                    "limiter %s: lease %s expired while the request ran (stalled process or Redis); the request"
                    " continues, the cap may be exceeded briefly", self._key_id, lease.token[:8],
                )
                return

    def _await_release(self, timeout_s: float) -> None:
        """Sleep until a slot is given back (one waiter is woken per release) or ``timeout_s`` passes."""
        try:
            self._redis.blpop([self._freed_key], timeout=max(0.001, round(timeout_s, 3)))
        except redis.RedisError as exc:  # asking again after the pause is all a wake-up would have done
            self._log.debug("limiter %s: waiting for a freed slot failed (%s)", self._key_id, exc)
            time.sleep(timeout_s)

    def _release(self, lease: Lease) -> None:
        try:
            self._give_back(keys=[self._leases_key, self._freed_key],
                            args=[lease.token, FREED_TOKENS_KEPT, self._lease_ms])
        except redis.RedisError as exc:
            # never mask the request's own outcome: the lease expires by itself within lease_s
            self._log.warning("limiter %s: could not release lease %s (%s); it expires within %.0f s",
                              self._key_id, lease.token[:8], exc, self._config.lease_s)


def _describe(reason: str, reply: list[Any]) -> str:
    if reason == "cooldown":
        return f"a 429 cool-down has {int(reply[2]) / 1000:.1f} s left"
    if reason == "rpm":
        return f"the requests-per-minute budget frees in {int(reply[2]) / 1000:.1f} s"
    return f"all {int(reply[3])} slots are in use"
