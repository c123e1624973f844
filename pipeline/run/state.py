"""Live state of runs in Redis: what ``status`` shows while a run goes on. Not the ledger (that is S3).

Redis keys (all expire ``RUN_TTL_S`` after their last write):

    sts:run:{run_id}:jobs        hash   job_id -> state (JobState value)
    sts:run:{run_id}:meta        hash   created_at, jobs, shards, budget, runs_uri
    sts:run:{run_id}:halt        string why the run was stopped (e.g. the API key was refused); workers stop spending
    sts:run:{run_id}:refused     hash   request shape -> why the service refused it for this key's plan (403); a job
                                        of the same shape is rejected without a request
    sts:run:{run_id}:paused      string why the run stopped spending for now (e.g. the quota is spent)
    sts:run:{run_id}:cancelled   string the cancel as JSON (who, at, why, now; ``pipeline.run.control``): no job of
                                        the run starts a request once it is set; S3's control.json keeps it for good
    sts:run:{run_id}:held        string the operator's pause as JSON; owned by ``pipeline.run.hold.RunHold`` (read
                                        here too: a running job starts no request while it is set)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from pipeline._redis import text
from pipeline.states import JobState

RUN_TTL_S = 14 * 24 * 3600


class RunState:
    """Read and write one run's live state."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._redis = client
        self.run_id = run_id
        self._jobs = f"sts:run:{run_id}:jobs"
        self._meta = f"sts:run:{run_id}:meta"
        self._halt = f"sts:run:{run_id}:halt"
        self._refused = f"sts:run:{run_id}:refused"
        self._paused = f"sts:run:{run_id}:paused"
        self._cancelled = f"sts:run:{run_id}:cancelled"
        self._held = f"sts:run:{run_id}:held"

    def init(self, meta: Mapping[str, str]) -> None:
        pipe = self._redis.pipeline()
        fields: dict[Any, Any] = {"created_at": str(time.time()), **meta}
        pipe.hset(self._meta, mapping=fields)
        pipe.expire(self._meta, RUN_TTL_S)
        pipe.execute()

    def mark_many(self, job_ids: Iterable[str], state: JobState) -> None:
        pipe = self._redis.pipeline(transaction=False)
        batch: dict[Any, Any] = {}
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
        return Counter(text(value) for value in self._redis.hvals(self._jobs))

    def meta(self) -> dict[str, str]:
        return {text(k): text(v) for k, v in self._redis.hgetall(self._meta).items()}

    def exists(self) -> bool:
        return bool(self._redis.exists(self._meta) or self._redis.exists(self._jobs))

    def halt(self, reason: str) -> None:
        self._redis.set(self._halt, reason, ex=RUN_TTL_S, nx=True)

    def halted(self) -> str | None:
        value = self._redis.get(self._halt)
        return text(value) if value else None

    def refuse(self, shape: str, reason: str) -> None:
        """Remember that the service refused this request shape for the plan: the run's other jobs of it stop."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hsetnx(self._refused, shape, reason)
        pipe.expire(self._refused, RUN_TTL_S)
        pipe.execute()

    def refused(self, shapes: Iterable[str]) -> tuple[str, str] | None:
        """The first of ``shapes`` the service refused in this run, and why; None when none was."""
        wanted = list(shapes)
        for shape, value in zip(wanted, self._redis.hmget(self._refused, wanted), strict=False):
            if value is not None:
                return shape, text(value)
        return None

    def pause(self, reason: str) -> None:
        self._redis.set(self._paused, reason, ex=RUN_TTL_S)

    def paused(self) -> str | None:
        value = self._redis.get(self._paused)
        return text(value) if value else None

    def cancel(self, record: str) -> None:
        """Record the cancel (JSON): every job of the run checks it before each request it would start."""
        self._redis.set(self._cancelled, record, ex=RUN_TTL_S)

    def cancelled(self) -> str | None:
        """The cancel's JSON when the run was cancelled, else None (one GET: it is asked before every request)."""
        value = self._redis.get(self._cancelled)
        return text(value) if value else None

    def held(self) -> bool:
        """Whether an operator paused the run (``sts-pipeline pause``)."""
        return bool(self._redis.exists(self._held))

    def cancelled_now(self) -> bool:
        """Whether the run was cancelled with ``--now``: requests in flight are abandoned between chunks. Asked while
        a paid body streams, so a Redis that does not answer means no (the stream goes on)."""
        import json

        try:
            record = self.cancelled()
        except redis.RedisError:
            return False
        if not record:
            return False
        try:
            return bool(json.loads(record).get("now"))
        except (ValueError, AttributeError):
            return False
