"""Thin Celery tasks: decode the message, call the library, map "not now" to a re-queue."""

from __future__ import annotations

import logging
import os
import random

import redis
from celery import Task, shared_task

from pipeline.conversion.calls import CallContext
from pipeline.run.budget import Budget
from pipeline.config import get_settings
from pipeline.conversion.job import TASK_CONVERT, JobMessage, WorkerContext, run_job
from pipeline.errors import SlotUnavailableError, StorageUnavailableError
from pipeline.api.limiter import Limiter, LimiterConfig, key_id_for
from pipeline.run.state import RunState
from pipeline.storage.s3 import Storage
from pipeline.api.client import StsClient

log = logging.getLogger(__name__)

#: re-queues after S3 stayed unreachable; after that the job is left for `reconcile`/`retry` (it shows as never ran)
MAX_STORAGE_REQUEUES = 8

_context: tuple[int, WorkerContext] | None = None


def worker_context() -> WorkerContext:
    """The process's clients, built after fork (connections must not cross a fork)."""
    global _context
    if _context is not None and _context[0] == os.getpid():
        return _context[1]
    settings = get_settings()
    api_key = settings.api_key_value() or ""
    limiter_redis = redis.Redis.from_url(settings.limiter_redis_url)
    limiter = Limiter(limiter_redis, key_id_for(api_key), LimiterConfig(
        configured_cap=settings.max_concurrent_requests, requests_per_minute=settings.requests_per_minute,
        lease_s=settings.lease_s, cooldown_default_s=settings.cooldown_default_s))
    client = StsClient(settings.api_base_url, api_key, connect_timeout_s=settings.connect_timeout_s,
                       read_timeout_s=settings.read_timeout_s, write_timeout_s=settings.write_timeout_s)
    calls = CallContext(settings=settings, client=client, limiter=limiter)
    context = WorkerContext(calls=calls, storage=Storage.from_settings(settings), redis=limiter_redis)
    _context = (os.getpid(), context)
    return context


@shared_task(bind=True, name=TASK_CONVERT, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def convert(self: Task, message: dict) -> str:  # type: ignore[type-arg]
    """Convert one job; the message is a ``JobMessage`` dict."""
    ctx = worker_context()
    ctx.task_id = self.request.id
    job_message = JobMessage.from_dict(message)
    ctx.calls.run_state = RunState(ctx.redis, job_message.run_id)
    ctx.calls.budget = Budget(ctx.redis, job_message.run_id)
    try:
        return run_job(ctx, job_message).value
    except SlotUnavailableError:
        delay_s = ctx.calls.settings.requeue_delay_s * random.uniform(0.5, 1.5)
        raise self.retry(countdown=delay_s, max_retries=None) from None
    except StorageUnavailableError as error:
        log.warning("job %s: S3 unavailable (%s); re-queued", job_message.job_id, error.message)
        raise self.retry(countdown=5.0 * random.uniform(1, 3), max_retries=MAX_STORAGE_REQUEUES) from None
