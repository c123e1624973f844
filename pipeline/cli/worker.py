"""``sts-pipeline worker``: a Celery worker configured for at-least-once delivery (see workers/app.py).

``-c N`` is how many jobs the worker converts at once, in either pool: ``--pool prefork`` (``STS_WORKER_POOL``, the
default) forks N processes, ``--pool threads`` runs N threads in one process (README, *Worker modes*).

With ``--metrics-port`` (``STS_METRICS_PORT``) the worker's main process serves Prometheus ``/metrics`` for all its
pool processes (``pipeline.ops.serve``); it is set up before the pool forks, so every child writes where it is read.
"""

from __future__ import annotations

import click

from pipeline.cli._base import main


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=2, show_default=True,
              help="Jobs converted at once (processes with prefork, threads with threads).")
@click.option("--pool", type=click.Choice(["prefork", "threads"]), default=None,
              help="prefork: a process per job; threads: one process, a thread per job [default: STS_WORKER_POOL, "
                   "else prefork].")
@click.option("--hostname", default=None, help="Celery node name, e.g. worker1@%h.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus /metrics on this port [default: STS_METRICS_PORT, else not served].")
def worker(concurrency: int, pool: str | None, hostname: str | None, loglevel: str, metrics_port: int | None) -> None:
    """Run a worker that converts jobs from the queue."""
    from pipeline.config import get_settings
    from pipeline.run.broker import check_broker

    settings = get_settings()
    check_broker(settings)
    port = metrics_port or settings.metrics_port
    if port:
        from pipeline.ops.serve import serve_worker_metrics

        serve_worker_metrics(port)
    from workers.app import create_app

    pool_name = pool or settings.worker_pool
    app = create_app(settings, pool=pool_name)
    argv = ["worker", "-P", pool_name, "-c", str(concurrency), "-Q", app.conf.task_default_queue,
            "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)
