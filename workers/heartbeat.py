"""Visibility heartbeat: turns kombu's Redis visibility timeout into a lease that lives as long as the worker.

kombu's Redis transport keeps every unacked delivery in the sorted set ``unacked_index`` scored with its delivery time,
and a periodic sweep re-queues those older than the visibility timeout (VT) — even while the task still runs. This
consumer bootstep re-scores the delivery tags of the worker's reserved and active requests every
``heartbeat_interval_s`` with ``ZADD XX <now>``, so:

- a job that runs for hours is never re-delivered while its worker lives (its score keeps moving), and
- a SIGKILLed worker stops beating, so its jobs are re-queued about VT + one sweep after the kill.

Each beat also says "alive" (``pipeline.ops.alive``): the node's name in ``sts:workers:{queue}`` for the metrics
exporter, and the mtime of ``STS_HEARTBEAT_FILE`` (if set) for Kubernetes probes. The beat runs in the consumer's
own timer, so a stale file means a stuck consumer, not just a slow job.

It reads Celery's own bookkeeping, ``celery.worker.state.active_requests`` and ``reserved_requests``, which the main
process keeps for every pool: prefork children report to it, and a threads worker's jobs run in it (a pool thread adds
its request when the job starts; the beat copies each set with one C call, which no other thread interleaves).

It leans on kombu internals (the key name and the score's meaning); pyproject pins kombu's range and
``tests/integration/test_delivery.py`` proves both properties, in both pools.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state as worker_state

from pipeline.ops import alive

log = logging.getLogger(__name__)

UNACKED_INDEX_KEY = "unacked_index"  # kombu's default ``unacked_index_key`` transport option


class VisibilityHeartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: keep this worker's deliveries visible-timeout-fresh while they are held."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    #: the started step of this process, for the drain's keep-alive (workers/drain.py)
    current: VisibilityHeartbeat | None = None

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_entry: Any = None
        self._redis: redis.Redis | None = None
        self._node, self._queue, self._file, self._interval_s = "", "", "", 15.0

    def start(self, parent: Any) -> None:
        conf = parent.app.conf
        interval_s = float(conf.sts_heartbeat_interval_s)
        self._redis = redis.Redis.from_url(conf.broker_url, socket_timeout=5, socket_connect_timeout=5)
        self._node, self._queue = str(getattr(parent, "hostname", "") or ""), str(conf.task_default_queue)
        self._file, self._interval_s = str(conf.get("sts_heartbeat_file") or ""), interval_s
        self.say_alive()
        self._timer_entry = parent.timer.call_repeatedly(interval_s, self.beat, priority=10)
        VisibilityHeartbeat.current = self
        log.info("visibility heartbeat every %.1f s (visibility timeout %.0f s)", interval_s,
                 conf.broker_transport_options.get("visibility_timeout", 0))

    def beat(self) -> int:
        """Re-score every held delivery; return how many were refreshed."""
        self.say_alive()
        tags = [tag for tag in self._held_tags() if tag]
        if not tags or self._redis is None:
            return 0
        try:
            now = time.time()
            refreshed = self._redis.zadd(UNACKED_INDEX_KEY, {tag: now for tag in tags}, xx=True, ch=True)
        except redis.RedisError as error:
            log.warning("visibility heartbeat failed: %s", type(error).__name__)
            return 0
        return int(refreshed or 0)

    def say_alive(self) -> None:
        """Touch the probe file and record the node's beat for the exporter (best effort: never stops a beat)."""
        try:
            if self._file:
                alive.touch(self._file)
            if self._redis is not None and self._node:
                alive.beat(self._redis, self._queue, self._node, self._interval_s)
        except (OSError, redis.RedisError) as error:
            log.warning("alive beat failed: %s", type(error).__name__)

    @staticmethod
    def _held_tags() -> list[str]:
        requests = list(worker_state.active_requests) + list(worker_state.reserved_requests)
        tags = []
        for request in requests:
            message = getattr(request, "message", None)
            tag = getattr(message, "delivery_tag", None)
            if tag:
                tags.append(str(tag))
        return tags

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def stop(self, parent: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    shutdown = stop
