"""The Celery app: Redis broker configured for at-least-once delivery with fast recovery.

- acks late + reject on worker lost: a job whose worker dies is delivered again, never lost;
- prefetch 1: a worker holds only what it runs;
- visibility timeout short (``STS_VISIBILITY_TIMEOUT_S``, 60 s) but refreshed by ``VisibilityHeartbeat`` while a job
  is held, so a long job never runs twice and a killed worker's job restarts within about VT + one sweep;
- results are not stored: outcomes live in S3 (provenance and failure records);
- a lost broker connection does not cancel running jobs: a job needs that connection only for its ack, and
  terminating it between uploading its output and writing the commit marker left an orphan output that the retry
  wrote a second time (the chaos drill's Redis restart). Should the message come back, the commit marker stops it.
"""

from __future__ import annotations

from celery import Celery

from pipeline.config import Settings, get_settings
from workers.heartbeat import VisibilityHeartbeat


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
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
        worker_soft_shutdown_timeout=10.0,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_time_limit_s - 60,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        worker_max_tasks_per_child=500,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=True,
        sts_heartbeat_interval_s=settings.heartbeat_interval_s,
    )
    app.steps["consumer"].add(VisibilityHeartbeat)
    return app
