"""Live state of runs in Redis: what ``status`` shows while a run goes on. Not the ledger (that is S3).

Redis keys (all expire ``RUN_TTL_S`` after their last write):

    sts:run:{run_id}:jobs        hash   job_id -> state (JobState value)
    sts:run:{run_id}:meta        hash   created_at, jobs, shards, budget, runs_uri
    sts:run:{run_id}:halt        string why the run was stopped (e.g. the API key was refused); workers stop spending
    sts:unclean:{job_id}         int    deliveries of this job that started and never finished cleanly (the poison
                                        guard: a job whose worker keeps dying is failed after ``max_deliveries``)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import redis

log = logging.getLogger(__name__)

RUN_TTL_S = 14 * 24 * 3600


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    SKIPPED = "skipped"  # already committed by an earlier run

    @property
    def terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class RunState:
    """Read and write one run's live state."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._redis = client
        self.run_id = run_id
        self._jobs = f"sts:run:{run_id}:jobs"
        self._meta = f"sts:run:{run_id}:meta"
        self._halt = f"sts:run:{run_id}:halt"

    def init(self, meta: dict[str, str]) -> None:
        pipe = self._redis.pipeline()
        pipe.hset(self._meta, mapping={"created_at": str(time.time()), **meta})
        pipe.expire(self._meta, RUN_TTL_S)
        pipe.execute()

    def mark_many(self, job_ids: Iterable[str], state: JobState) -> None:
        pipe = self._redis.pipeline(transaction=False)
        batch: dict[str, str] = {}
        for job_id in job_ids:
            batch[job_id] = state.value
            if len(batch) >= 5000:
                pipe.hset(self._jobs, mapping=batch)
                batch = {}
        if batch:
            pipe.hset(self._jobs, mapping=batch)
        pipe.expire(self._jobs, RUN_TTL_S)
        pipe.execute()

    def mark(self, job_id: str, state: JobState) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._jobs, job_id, state.value)
        pipe.expire(self._jobs, RUN_TTL_S)
        pipe.execute()

    def counts(self) -> Counter[str]:
        return Counter(value.decode() for value in self._redis.hvals(self._jobs))

    def meta(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self._redis.hgetall(self._meta).items()}

    def exists(self) -> bool:
        return bool(self._redis.exists(self._meta) or self._redis.exists(self._jobs))

    def halt(self, reason: str) -> None:
        self._redis.set(self._halt, reason, ex=RUN_TTL_S, nx=True)

    def halted(self) -> str | None:
        value = self._redis.get(self._halt)
        return value.decode() if value else None


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


def best_effort(action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a Redis write that must never undo the job: log a Redis fault and carry on.

    Used for what is recorded after a response or an outcome (limiter feedback, budget settlement, live state). Raising
    there would throw away audio already paid for, or a result already durable in S3; skipping the write costs only a
    lesson the limiter did not learn, credits the budget did not count, or a stale ``status``.
    """
    try:
        action(*args, **kwargs)
    except redis.RedisError as error:
        log.warning("could not write to Redis (%s: %s); carrying on without it",
                    getattr(action, "__qualname__", "?"), type(error).__name__)
