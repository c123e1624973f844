"""The poison guard: a job whose worker keeps dying (killed, out of memory) is failed instead of redelivered forever.

Redis key (expires a week after its last write):

    sts:unclean:{job_id}         int    deliveries of this job that started and never finished cleanly
"""

from __future__ import annotations

import redis


class DeliveryGuard:
    """Counts deliveries of a job that began and never ended cleanly; see the module docstring."""

    def __init__(self, client: redis.Redis, job_id: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self._redis = client
        self._key = f"sts:unclean:{job_id}"
        self._ttl_s = ttl_s

    def begin(self) -> int:
        """Count this delivery as begun; return how many begun deliveries never ended, this one included."""
        pipe = self._redis.pipeline()
        pipe.incr(self._key)
        pipe.expire(self._key, self._ttl_s)
        count, _ = pipe.execute()
        return int(count)

    def end(self) -> None:
        """The delivery ended cleanly (whatever its outcome): it does not count against the job.

        A counter that would go below zero (Redis was wiped while the job ran) is removed instead of left at -1.
        """
        self._redis.eval(_END_DELIVERY, 1, self._key)


#: KEYS[1] = sts:unclean:{job_id}. Decrement; drop the key when nothing is left (or it was already gone).
_END_DELIVERY = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""
