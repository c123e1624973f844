"""Thin Celery tasks: decode the message, call the library, map "not now" to a re-queue."""

from __future__ import annotations

import logging
import os
import random
import threading
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from pipeline.config import get_settings
from pipeline.conversion.claim import JobClaimed
from pipeline.conversion.context import WorkerContext
from pipeline.conversion.job import run_job
from pipeline.errors import SlotUnavailableError, StorageUnavailableError
from pipeline.ops import tracing
from pipeline.run.aging import age_queue
from pipeline.run.finish import finish_if_last
from pipeline.run.handback import hand_back_if_outranked
from pipeline.run.hold import RunHold
from pipeline.run.message import TASK_CONVERT, JobMessage

log = logging.getLogger(__name__)

#: re-queues after S3 stayed unreachable; after that the job is left for `reconcile`/`retry` (it shows as never ran)
MAX_STORAGE_REQUEUES = 8

# a prefork child leaves with os._exit (no atexit handler runs): the spans it still holds are exported first
worker_process_shutdown.connect(lambda **_: tracing.stop(), weak=False)

_context: tuple[int, WorkerContext] | None = None
_context_lock = threading.Lock()


def worker_context() -> WorkerContext:
    """The process's clients, built after fork (connections must not cross a fork) and once per process: the threads
    of a ``--pool threads`` worker share them (httpx, boto3 and redis-py clients are thread-safe)."""
    global _context
    with _context_lock:
        if _context is None or _context[0] != os.getpid():
            _context = (os.getpid(), WorkerContext.from_settings(get_settings()))
        return _context[1]


def _warm(**_: Any) -> None:
    """Build the process's clients before its first job (about 0.2 CPU-s: boto3's models, httpx, redis), so the first
    job's request is not late by them; if that fails, the first job builds them and reports what went wrong."""
    try:
        worker_context()
    except Exception as error:  # e.g. a setting that does not parse: the job's own error says it better
        log.warning("worker clients not built ahead of the first job: %s", type(error).__name__)


worker_process_init.connect(_warm, weak=False)  # each prefork child, after the fork
worker_ready.connect(lambda sender, **_: _warm() if sender.app.conf.get("sts_worker_pool") == "threads" else None,
                     weak=False)  # a threads worker's one process


@shared_task(bind=True, name=TASK_CONVERT, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def convert(self: Task, message: dict) -> str:
    """Convert one job; the message is a ``JobMessage`` dict."""
    worker = worker_context()
    job_message = JobMessage.from_dict(message)
    if RunHold(worker.redis, job_message.run_id).park_if_held(message):  # paused: parked for resume, no retry
        log.info("job %s: its run is paused; parked until resume", job_message.job_id)
        return "parked"
    if hand_back_if_outranked(worker.settings.broker_url, worker.settings.queue, self.request):
        log.info("job %s: higher-priority work is waiting; its message went back to the queue", job_message.job_id)
        return "handed back"  # the copy is queued in the original's place (pipeline/run/handback.py)
    try:
        state = run_job(worker.for_job(job_message, task_id=self.request.id))
    except (SlotUnavailableError, JobClaimed) as error:
        if isinstance(error, JobClaimed):
            log.info("job %s: %s", job_message.job_id, error.message)
        delay_s = worker.settings.requeue_delay_s * random.uniform(0.5, 1.5)
        raise self.retry(countdown=delay_s, max_retries=None) from None
    except StorageUnavailableError as error:
        log.warning("job %s: S3 unavailable (%s); re-queued", job_message.job_id, error.message)
        raise self.retry(countdown=5.0 * random.uniform(1, 3), max_retries=MAX_STORAGE_REQUEUES) from None
    # the job's outcome is decided; the run's last job writes its result files (exactly once, pipeline.run.finish)
    finish_if_last(worker.redis, worker.storage, job_message.run_id, job_message.job_id, state, worker.settings)
    age_queue(worker.settings.broker_url, worker.settings.queue)  # no run starves behind higher ones (aging.py)
    return state.value
