"""``sts-pipeline metrics``'s collector: what no single worker knows, read from Redis at each scrape.

- queue depth the right way (``pipeline.ops.queue``): every priority list plus reserved work; KEDA scales on
  ``sts_queue_depth``;
- the shared limiter's own view (``Limiter.snapshot``): requests in flight, the effective cap, the learned cap;
- workers alive per queue (``pipeline.ops.alive``, written by each worker's heartbeat);
- the runs in flight and their state (running / paused / halted).

A scrape that cannot reach Redis yields ``sts_exporter_redis_up 0`` and none of the rest: a missing series, not a
zero, so that an alert on "queue depth > 0" neither fires nor clears on a broken exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis

from pipeline.api.limiter import Limiter
from pipeline.ops.alive import count_alive
from pipeline.ops.queue import queue_depth
from pipeline.ops.runs import runs_in_flight

log = logging.getLogger(__name__)

__all__ = ["EXPORTER_METRICS", "StsCollector"]

#: every series the exporter serves (the dashboard test checks queries against these and the workers' names)
EXPORTER_METRICS = {
    "sts_exporter_redis_up": "1 when the last scrape read Redis",
    "sts_queue_messages": "messages waiting in the queue, every priority list counted",
    "sts_queue_reserved_messages": "messages fetched by a worker (running or prefetched) and not yet acked",
    "sts_queue_depth": "waiting + reserved: the work the queue holds (what the autoscaler reads)",
    "sts_limiter_in_flight": "requests in flight against the API key, across all workers",
    "sts_limiter_effective_cap": "the cap requests are held to now (configured, learned and AIMD together)",
    "sts_limiter_learned_cap": "the cap the service announced (maximum-concurrent-requests); 0 while unknown",
    "sts_limiter_cooldown_seconds": "time left in the shared pause after a 429",
    "sts_workers_alive": "workers whose heartbeat is fresh, by queue",
    "sts_run_state": "1 for each run in flight, by its state (running, paused, halted)",
    "sts_run_jobs": "jobs of a run in flight, queued or running",
}


class StsCollector:
    """A prometheus-client collector; each ``collect`` reads Redis once (a few pipelined commands and scans)."""

    def __init__(self, broker: redis.Redis, live: redis.Redis, limiter: Limiter, queues: list[str],
                 heartbeat_interval_s: float) -> None:
        self._broker, self._live, self._limiter = broker, live, limiter
        self._queues = queues
        self._alive_within_s = 3 * heartbeat_interval_s

    def describe(self) -> Iterator[Any]:
        return iter(())  # no fixed description: collect() is called only on scrape

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("sts_exporter_redis_up", EXPORTER_METRICS["sts_exporter_redis_up"])
        try:
            families = list(self._families())
        except redis.RedisError as error:
            log.warning("metrics: Redis unreadable (%s)", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, labels: list[str] | None = None) -> Any:
            return GaugeMetricFamily(name, EXPORTER_METRICS[name], labels=labels)

        queued, reserved, depth, alive = (gauge(n, ["queue"]) for n in (
            "sts_queue_messages", "sts_queue_reserved_messages", "sts_queue_depth", "sts_workers_alive"))
        for queue, found in queue_depth(self._broker, self._queues).items():
            queued.add_metric([queue], found.queued)
            reserved.add_metric([queue], found.reserved)
            depth.add_metric([queue], found.total)
            alive.add_metric([queue], count_alive(self._broker, queue, self._alive_within_s))
        yield from (queued, reserved, depth, alive)
        yield from self._limiter_families(gauge)
        yield from self._run_families(gauge)

    def _limiter_families(self, gauge: Any) -> Iterator[Any]:
        view = self._limiter.snapshot()
        for name, value in (("sts_limiter_in_flight", view["in_flight"]),
                            ("sts_limiter_effective_cap", view["effective_cap"]),
                            ("sts_limiter_learned_cap", view["learned_cap"] or 0),
                            ("sts_limiter_cooldown_seconds", view["cooldown_remaining_s"])):
            family = gauge(name)
            family.add_metric([], float(value))
            yield family

    def _run_families(self, gauge: Any) -> Iterator[Any]:
        states, jobs = gauge("sts_run_state", ["run_id", "state"]), gauge("sts_run_jobs", ["run_id", "state"])
        for run in runs_in_flight(self._live):
            states.add_metric([run.run_id, run.state], 1)
            jobs.add_metric([run.run_id, "queued"], run.queued)
            jobs.add_metric([run.run_id, "running"], run.running)
        yield states
        yield jobs
