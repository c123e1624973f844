"""``sts-pipeline pause`` / ``resume``: a run stops starting jobs and carries on later, without queue churn
(``pipeline.run.hold``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.cli._base import main

if TYPE_CHECKING:
    from pipeline.config import Settings


def _clients(runs_uri: str | None) -> tuple[Settings, Any, Any]:
    import redis

    from pipeline.config import get_settings

    settings = get_settings()
    if runs_uri:
        settings = settings.model_copy(update={"runs_uri": runs_uri})
    return (settings, redis.Redis.from_url(settings.limiter_redis_url),
            redis.Redis.from_url(settings.broker_url))


_RUNS_URI = click.option("--runs-uri", default=None, metavar="s3://BUCKET/PREFIX",
                         help="Where runs are stored (default: STS_RUNS_URI).")


@main.command()
@click.argument("run_id")
@click.option("--why", default="", metavar="TEXT", help="Why the run was paused (kept in control.json).")
@_RUNS_URI
def pause(run_id: str, why: str, runs_uri: str | None) -> None:
    """Pause RUN_ID: no job of it starts until ``resume``; running jobs finish. Its queued messages are parked once
    (no re-queueing while paused), and the pause is recorded with the run in S3."""
    import json

    from rich.console import Console

    from pipeline.run.control import record_action
    from pipeline.run.hold import RunHold
    from pipeline.run.notify import tell
    from pipeline.run.stored import check_run_id, runs_root
    from pipeline.storage.s3 import Storage

    settings, live, broker = _clients(runs_uri)
    action = record_action(Storage.from_settings(settings), runs_root(settings), check_run_id(run_id), "pause",
                           why=why)
    parked = RunHold(live, run_id, broker).pause(json.dumps(action.to_dict()), settings.queue)
    Console(stderr=True).print(f"run {run_id} paused by {action.who}: {parked} queued job(s) parked",
                               markup=False, highlight=False)
    tell(live, run_id, "run.paused", {"parked": parked, "by": action.who, "why": action.why}, wait=True)


@main.command()
@click.argument("run_id")
@_RUNS_URI
def resume(run_id: str, runs_uri: str | None) -> None:
    """Resume a paused RUN_ID: its parked jobs go back to the queue where they were."""
    from rich.console import Console

    from pipeline.run.control import record_action
    from pipeline.run.hold import RunHold
    from pipeline.run.message import PRIORITIES, TASK_CONVERT, task_id
    from pipeline.run.notify import tell
    from pipeline.run.state import RunState
    from pipeline.run.stored import check_run_id, runs_root
    from pipeline.storage.s3 import Storage
    from workers.app import create_app

    settings, live, broker = _clients(runs_uri)
    app = create_app(settings)

    priority = PRIORITIES.get(RunState(live, run_id).meta().get("priority", "normal"), PRIORITIES["normal"])

    def send(message: dict[str, Any]) -> None:  # a job a worker parked goes back with its run's priority
        app.send_task(TASK_CONVERT, args=[message], task_id=task_id(message["run_id"], message["job_id"]),
                      priority=priority)

    back, resent = RunHold(live, check_run_id(run_id), broker).resume(send)
    record_action(Storage.from_settings(settings), runs_root(settings), run_id, "resume")
    Console(stderr=True).print(f"run {run_id} resumed: {back + resent} job(s) back on the queue",
                               markup=False, highlight=False)
    tell(live, run_id, "run.resumed", {"requeued": back + resent}, wait=True)
