"""``sts-pipeline metrics``: a small Prometheus exporter for what no single worker knows (``pipeline.ops.exporter``).

Run one per deployment (it only reads Redis). Each worker serves its own counters and histograms on
``--metrics-port``; this serves the queue depth (every priority list plus reserved work), the shared limiter's view,
the workers alive and the runs in flight.
"""

from __future__ import annotations

import click

from pipeline.cli._base import main

DEFAULT_PORT = 9808


@main.command("metrics")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--addr", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--queue", "queues", multiple=True, help="Queue to count (repeatable) [default: STS_QUEUE].")
def metrics(port: int, addr: str, queues: tuple[str, ...]) -> None:
    """Serve queue depth, limiter, workers-alive and run-state metrics for Prometheus."""
    import time

    import redis
    from prometheus_client import CollectorRegistry, start_http_server

    from pipeline.api.limiter import Limiter
    from pipeline.config import get_settings
    from pipeline.ops.exporter import StsCollector

    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    live = redis.Redis.from_url(settings.limiter_redis_url, socket_timeout=5, socket_connect_timeout=5)
    registry = CollectorRegistry()
    registry.register(StsCollector(broker, live, Limiter.from_settings(settings, live), list(queues) or
                                   [settings.queue], settings.heartbeat_interval_s))
    start_http_server(port, addr=addr, registry=registry)
    click.echo(f"metrics exporter on http://{addr}:{port}/metrics (queues: {', '.join(queues or [settings.queue])})")
    while True:
        time.sleep(3600)
