"""What a worker builds once per process (clients, connections), and what one job adds to it (its run's state).

Per-job values are passed down in a ``JobContext`` made for each task, never written onto the process-wide
``WorkerContext``: a process converts many jobs, and a field left over from the last one must not leak into the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from pipeline.api.client import StsClient
from pipeline.api.limiter import Limiter, key_id_for
from pipeline.config import Settings
from pipeline.conversion.calls import CallContext
from pipeline.run.budget import Budget
from pipeline.run.message import JobMessage
from pipeline.run.quota import QuotaGate
from pipeline.run.state import RunState
from pipeline.storage.s3 import Storage

__all__ = ["REDIS_TIMEOUT_S", "JobContext", "WorkerContext"]

#: longest a worker's Redis command (limiter, run state, budget, claim) may take; none of them blocks on purpose
REDIS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker process builds once and reuses for every job."""

    settings: Settings
    client: StsClient
    limiter: Limiter
    storage: Storage
    redis: Any  # redis.Redis; Any so that tests may pass a stand-in

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        """Build the process's clients (call it after fork: connections must not cross a fork).

        One context serves every job of the process, and with ``--pool threads`` several at once: the httpx, boto3
        and redis-py clients are thread-safe, and nothing per job is stored on it (``for_job``). The Redis client has
        socket timeouts: no time limit interrupts a thread, so no Redis call may wait forever.
        """
        client = redis.Redis.from_url(settings.limiter_redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
        return cls(settings=settings, client=StsClient.from_settings(settings),
                   limiter=Limiter.from_settings(settings, client), storage=Storage.from_settings(settings),
                   redis=client)

    def for_job(self, message: JobMessage, *, task_id: str | None = None) -> JobContext:
        run_state = RunState(self.redis, message.run_id)
        calls = CallContext(settings=self.settings, client=self.client, limiter=self.limiter, run_state=run_state,
                            budget=Budget(self.redis, message.run_id),
                            quota=QuotaGate(self.redis, key_id_for(self.settings.api_key_value() or "")))
        return JobContext(worker=self, message=message, calls=calls, run_state=run_state, task_id=task_id)


@dataclass(frozen=True)
class JobContext:
    """One job's view of the worker: the process's clients plus this job's run state, budget and task id."""

    worker: WorkerContext
    message: JobMessage
    calls: CallContext
    run_state: RunState
    task_id: str | None = None

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    @property
    def storage(self) -> Storage:
        return self.worker.storage

    @property
    def redis(self) -> Any:
        return self.worker.redis
