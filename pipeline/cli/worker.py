"""``sts-pipeline worker``: a Celery worker configured for at-least-once delivery (see workers/app.py)."""

from __future__ import annotations

import click

from pipeline.cli._base import main


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-c", "--concurrency", type=int, default=2, show_default=True, help="Worker processes (prefork).")
@click.option("--hostname", default=None, help="Celery node name, e.g. worker1@%h.")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int, hostname: str | None, loglevel: str) -> None:
    """Run a worker that converts jobs from the queue."""
    from pipeline.config import get_settings
    from pipeline.run.broker import check_broker
    from workers.app import create_app

    check_broker(get_settings())
    app = create_app()
    argv = ["worker", "-P", "prefork", "-c", str(concurrency), "-Q", app.conf.task_default_queue,
            "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)
