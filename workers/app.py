"""The Celery app: Redis broker configured for at-least-once delivery with fast recovery.

- acks late + reject on worker lost: a job whose worker dies is delivered again, never lost;
- prefetch 1: a worker holds only what it runs;
- visibility timeout short (``STS_VISIBILITY_TIMEOUT_S``, 60 s) but refreshed by ``VisibilityHeartbeat`` while a job
  is held, so a long job never runs twice and a killed worker's job restarts within about VT + one sweep;
- results are not stored: outcomes live in S3 (provenance and failure records);
- the pool (``STS_WORKER_POOL``): ``prefork`` gets Celery's time limits (a child past the soft limit fails its job
  with a record, one past the hard limit is killed) and a fresh child every 500 jobs; ``threads`` gets neither, since
  a thread can be neither interrupted nor replaced: there every step of a job carries its own bound (request
  deadlines, ffmpeg timeouts, S3 and Redis socket timeouts, bounded waits; README, *Worker modes*);
- a lost broker connection does not cancel running jobs: a job needs that connection only for its ack, and
  terminating it between uploading its output and writing the commit marker left an orphan output that the retry
  wrote a second time (the chaos drill's Redis restart). Should the message come back, the commit marker stops it.

Every log line a worker writes goes through ``UntrustedText``: log lines carry others' text (object keys, manifest
fields, the API's messages), so each is redacted and has its control characters escaped, one record one line.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from pipeline.config import Settings, get_settings
from pipeline.errors import redact
from pipeline.text import printable
from workers import drain
from workers.heartbeat import VisibilityHeartbeat


class UntrustedText(logging.Filter):
    """Makes a log record safe to show: secrets redacted, control characters escaped (an ESC sequence cannot drive
    the terminal or log viewer, a line break cannot forge a line); a traceback keeps its own line breaks."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's own error reporting
            return True
        record.msg, record.args = printable(redact(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = printable(redact(record.exc_text), multiline=True)
        if record.stack_info:
            record.stack_info = printable(redact(record.stack_info), multiline=True)
        return True


def _filter_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(existing, UntrustedText) for existing in handler.filters):
            handler.addFilter(UntrustedText())


after_setup_logger.connect(_filter_handlers, weak=False)
after_setup_task_logger.connect(_filter_handlers, weak=False)


def _pool_conf(settings: Settings, pool: str) -> dict[str, Any]:
    """What only the prefork pool honours (see the module docstring); the threads pool would ignore it silently."""
    if pool != "prefork":
        return {}
    return {"task_time_limit": settings.task_time_limit_s, "task_soft_time_limit": settings.task_time_limit_s - 60,
            "worker_max_tasks_per_child": 500}


def create_app(settings: Settings | None = None, pool: str | None = None) -> Celery:
    """The Celery app, configured for a worker of ``pool`` (``prefork`` or ``threads``; default ``worker_pool``)."""
    settings = settings or get_settings()
    pool = pool or settings.worker_pool
    app = Celery("sts_pipeline", broker=settings.broker_url, include=["workers.tasks"])
    vt = settings.visibility_timeout_s
    transport = {
        "visibility_timeout": vt,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry_on_timeout": True,
    }
    app.conf.update(
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": vt},
        visibility_timeout=vt,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # see the module docstring
        worker_enable_soft_shutdown_on_idle=True,
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout_s,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=True,
        sts_heartbeat_interval_s=settings.heartbeat_interval_s,
        sts_heartbeat_file=settings.heartbeat_file,  # touched by the heartbeat for probes (pipeline.ops.alive)
        sts_worker_pool=pool,  # workers/tasks.py builds the clients where the jobs will run, before the first one
        **_pool_conf(settings, pool),
    )
    app.steps["consumer"].add(VisibilityHeartbeat)
    drain.connect()  # on SIGTERM no job starts another request; it hands itself back (workers/drain.py)
    return app
