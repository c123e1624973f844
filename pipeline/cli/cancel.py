"""``sts-pipeline cancel``: no job of the run starts another request; what is queued ends ``cancelled``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.cli._base import main

if TYPE_CHECKING:
    from pipeline.config import Settings


@main.command()
@click.argument("run_id")
@click.option("--why", default="", metavar="TEXT", help="Why the run was cancelled (kept in control.json).")
@click.option("--now", is_flag=True,
              help="Also abandon requests in flight (between chunks): their jobs end cancelled; audio already "
                   "received in full is uploaded and kept.")
@click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX",
              help="Where runs are stored (default: STS_RUNS_URI).")
def cancel(run_id: str, why: str, now: bool, runs_uri: str | None) -> None:
    """Cancel RUN_ID: recorded in Redis (workers stop starting requests at once) and in S3 with the run
    (``control.json``: who, when, why), so ``reconcile`` reports its untouched lines ``cancelled``, not missing.

    Jobs still queued end ``cancelled`` without spending; running jobs finish their request and are kept.
    """
    import redis
    from rich.console import Console

    from pipeline.config import get_settings
    from pipeline.errors import BrokerError
    from pipeline.run.control import cancel_run
    from pipeline.run.notify import tell
    from pipeline.run.stored import check_run_id, runs_root
    from pipeline.storage.s3 import Storage

    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    client = redis.Redis.from_url(settings.limiter_redis_url)
    try:
        action = cancel_run(Storage.from_settings(settings), client, runs_root(settings), check_run_id(run_id),
                            why=why, now=now)
        _unpark(settings, client, run_id)
        tell(client, run_id, "run.cancelled", {"by": action.who, "why": action.why}, wait=True)
    except redis.RedisError as error:
        raise BrokerError(f"Redis did not answer ({type(error).__name__}); the cancel needs it to reach the "
                          "workers: check STS_LIMITER_URL, then cancel again") from None
    Console(stderr=True).print(f"run {run_id} cancelled by {action.who} at {action.at}"
                               + (f": {action.why}" if action.why else "") + (" (--now)" if action.now else ""),
                               markup=False, highlight=False)


def _unpark(settings: Settings, client: Any, run_id: str) -> None:
    """A paused run's parked jobs go back to the queue, so that workers end each of them ``cancelled``."""
    import redis

    from pipeline.run.hold import RunHold
    from pipeline.run.message import PRIORITIES, TASK_CONVERT, task_id
    from workers.app import create_app

    hold = RunHold(client, run_id, redis.Redis.from_url(settings.broker_url))
    if not hold.held() and not hold.parked():
        return
    app = create_app(settings)
    hold.resume(lambda message: app.send_task(TASK_CONVERT, args=[message], priority=PRIORITIES["high"],
                                              task_id=task_id(message["run_id"], message["job_id"])))
