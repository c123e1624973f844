"""The credit budget of one run, shared by every worker through Redis.

A worker reserves a job's estimated cost before the request and settles the reservation with the billed cost after
it. A reservation that would take spent + reserved past the limit is refused, so the job is not started. The limit
can only be overshot by what in-flight requests cost beyond their estimates.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis

from pipeline._redis import is_hash_tag_safe, text
from pipeline.errors import BudgetExceededError

__all__ = ["Budget", "Reservation"]

#: how long a run's budget keys outlive the last reservation, settlement or limit change
BUDGET_TTL_S = 7 * 24 * 3600
#: a reservation not settled or released within this long is dropped: its worker died (the task's hard time limit
#: is shorter). A settle that still arrives later counts in full.
DEFAULT_RESERVATION_TTL_S = 6 * 3600.0
#: float slack, so that e.g. ten reservations of 0.1 fit a limit of 1.0
_EPSILON = 1e-9

# Shared Lua prelude, not a script by itself. ``now`` is the Redis server time in ms.
#   live_reserved(res, exp)   drop expired reservations, then sum the live ones
#                             (res: reservations HASH token -> estimate, exp: expiries ZSET token -> expiry ms)
_LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live_reserved(res, exp)
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now)) do
    redis.call('HDEL', res, token)
  end
  redis.call('ZREMRANGEBYSCORE', exp, '-inf', now)
  local total = 0
  for _, value in ipairs(redis.call('HVALS', res)) do total = total + tonumber(value) end
  return total
end
"""

# Reserve an estimate unless it would cross the limit.
# KEYS[1] budget HASH (limit, spent)   KEYS[2] reservations HASH   KEYS[3] reservation expiries ZSET
# ARGV[1] token   ARGV[2] estimate   ARGV[3] reservation TTL ms   ARGV[4] key TTL s   ARGV[5] epsilon
# Returns {1 if reserved else 0, spent, reserved before this one, limit or ''} (numbers as strings).
RESERVE_LUA = _LUA_PRELUDE + """
local reserved = live_reserved(KEYS[2], KEYS[3])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit'))
local shown_limit = ''
if limit then shown_limit = tostring(limit) end
if limit and spent + reserved + tonumber(ARGV[2]) > limit + tonumber(ARGV[5]) then
  return {0, tostring(spent), tostring(reserved), shown_limit}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4])) end
return {1, tostring(spent), tostring(reserved), shown_limit}
"""

# Sum of live reservations (expired ones are dropped on the way).
# KEYS[1] reservations HASH   KEYS[2] reservation expiries ZSET
# Returns the sum as a string.
RESERVED_LUA = _LUA_PRELUDE + """
return tostring(live_reserved(KEYS[1], KEYS[2]))
"""


@dataclass(frozen=True)
class Reservation:
    """Credits held for one request until it is settled or released."""

    token: str
    estimate: float


class Budget:
    """The credit budget of one run.

    Redis keys (``{run}`` is the run id; braces make it a cluster hash tag):

    - ``sts:budget:{run}``       HASH  ``limit`` (absent = unlimited), ``spent`` (credits billed so far)
    - ``sts:budget:{run}:res``   HASH  reservation token -> estimated credits
    - ``sts:budget:{run}:exp``   ZSET  reservation token -> expiry (server ms); expired reservations are dropped

    All three expire ``BUDGET_TTL_S`` after the last write.
    """

    def __init__(
        self, redis: redis.Redis, run_id: str, *, reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S
    ) -> None:
        if not is_hash_tag_safe(run_id):
            raise ValueError(f"run_id must be non-empty, without spaces or braces: {run_id!r}")
        self._redis = redis
        self._run_id = run_id
        self._reservation_ttl_ms = max(1, int(reservation_ttl_s * 1000))
        self._keys = [f"sts:budget:{{{run_id}}}", f"sts:budget:{{{run_id}}}:res", f"sts:budget:{{{run_id}}}:exp"]
        self._reserve = redis.register_script(RESERVE_LUA)
        self._reserved = redis.register_script(RESERVED_LUA)

    def set_limit(self, credits: float | None) -> None:
        """Set the run's limit in credits; None = unlimited."""
        if credits is None:
            self._redis.hdel(self._keys[0], "limit")
            return
        if credits < 0:
            raise ValueError(f"a budget cannot be negative: {credits}")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys[0], "limit", repr(float(credits)))
            pipe.expire(self._keys[0], BUDGET_TTL_S)
            pipe.execute()

    def reserve(self, estimate: float) -> Reservation:
        """Hold ``estimate`` credits for one request; raises BudgetExceededError if spent + reserved + estimate
        would cross the limit (the job is then not started)."""
        if estimate < 0:
            raise ValueError(f"a cost estimate cannot be negative: {estimate}")
        token = secrets.token_hex(12)
        ok, spent, reserved, limit = (text(v) for v in self._reserve(
            keys=self._keys, args=[token, repr(float(estimate)), self._reservation_ttl_ms, BUDGET_TTL_S, _EPSILON]
        ))
        if ok != "1":
            raise BudgetExceededError(
                f"run {self._run_id}: the job's estimated {estimate:.1f} credits would cross the budget of"
                f" {float(limit):.1f} ({float(spent):.1f} spent, {float(reserved):.1f} reserved by requests in"
                " flight); the job was not started. Raise the run's budget to go on."
            )
        return Reservation(token=token, estimate=float(estimate))

    def settle(self, reservation: Reservation, actual: float) -> None:
        """The request was billed ``actual`` credits: drop its reservation and add ``actual`` to spent. Call once."""
        if actual < 0:
            raise ValueError(f"a billed cost cannot be negative: {actual}")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys[1], reservation.token)
            pipe.zrem(self._keys[2], reservation.token)
            pipe.hincrbyfloat(self._keys[0], "spent", float(actual))
            for key in self._keys:
                pipe.expire(key, BUDGET_TTL_S)
            pipe.execute()

    def release(self, reservation: Reservation) -> None:
        """The request failed before it was billed: drop its reservation."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys[1], reservation.token)
            pipe.zrem(self._keys[2], reservation.token)
            pipe.execute()

    def spent(self) -> float:
        """Credits billed so far."""
        value = self._redis.hget(self._keys[0], "spent")
        return float(value) if value is not None else 0.0

    def reserved(self) -> float:
        """Credits held by requests in flight."""
        return float(text(self._reserved(keys=self._keys[1:])))

    def limit(self) -> float | None:
        """The run's limit in credits; None = unlimited."""
        value = self._redis.hget(self._keys[0], "limit")
        return float(value) if value is not None else None
