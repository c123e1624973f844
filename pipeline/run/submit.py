"""Submit: turn validated shards into one Celery task per job, skipping what S3 says is already done."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from pipeline import __version__
from pipeline.manifest.load import ManifestEntry, Shard
from pipeline.ops.tracing import submit_span
from pipeline.run.budget import Budget
from pipeline.run.finish import RunFinish
from pipeline.run.message import PRIORITIES, TASK_CONVERT, JobMessage, task_id
from pipeline.run.state import RunState
from pipeline.run.stored import save_run
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs


@dataclass
class SubmitReport:
    run_id: str
    jobs: int = 0
    enqueued: int = 0
    skipped: int = 0


def enqueue(app: Celery, storage: Storage, client: redis.Redis, shards: Sequence[Shard], *, run_id: str,
            force: bool = False, budget_credits: float | None = None, info: dict[str, Any] | None = None,
            entries: Sequence[ManifestEntry] | None = None, overwrite: bool = False,
            priority: str = "normal") -> SubmitReport:
    """Enqueue every valid entry of ``shards`` (or just ``entries``) not yet committed in S3 (all with ``force``).

    With ``overwrite`` every job may replace an object at its output that the pipeline did not write (the task
    message's job says ``"overwrite": true``, as if every line did).
    """
    chosen = list(entries) if entries is not None else [e for shard in shards for e in shard.entries]
    report = SubmitReport(run_id=run_id, jobs=len(chosen))
    done: set[str] = set()
    if not force:
        presence = scan_outputs(storage, (e.output for e in chosen))
        done = {uri for uri, seen in presence.items() if seen.provenance}
    state = RunState(client, run_id)
    state.init({"jobs": str(len(chosen)), "shards": ",".join(s.name for s in shards),
                "package_version": __version__, "priority": priority,
                **{k: str(v) for k, v in (info or {}).items()}})
    if budget_credits is not None:
        Budget(client, run_id).set_limit(budget_credits)
    skipped = [e for e in chosen if e.output in done]
    todo = [e for e in chosen if e.output not in done]
    state.mark_many((e.job_id for e in skipped), JobState.SKIPPED)
    state.mark_many((e.job_id for e in todo), JobState.QUEUED)
    RunFinish(client, run_id).expect(len(todo))  # before any job can end: the last one writes the result files
    now = time.time()
    with submit_span(run_id, jobs=len(todo), priority=priority) as span, app.producer_or_acquire() as producer:
        trace = span.carrier()  # each job's span is a child of this one (pipeline.ops.tracing)
        for entry in todo:
            job = entry.job.model_dump(mode="json", exclude_none=True)
            if overwrite:
                job["overwrite"] = True
            message = JobMessage(run_id=run_id, shard=entry.shard, line=entry.line, job_id=entry.job_id,
                                 output=entry.output, job=job, queued_at=now, trace=trace)
            app.send_task(TASK_CONVERT, args=[message.to_dict()], task_id=task_id(run_id, entry.job_id),
                          producer=producer, priority=PRIORITIES[priority])
    report.enqueued = len(todo)
    report.skipped = len(skipped)
    return report


def start_run(app: Celery, storage: Storage, client: redis.Redis, shards: Sequence[Shard], *, run_id: str,
              root: S3Uri, info: dict[str, Any], manifests: dict[str, bytes], budget_credits: float | None = None,
              force: bool = False, entries: Sequence[ManifestEntry] | None = None,
              overwrite: bool = False, priority: str = "normal") -> SubmitReport:
    """Store the run's copy in S3 (so it can be found from any machine), then enqueue its jobs."""
    save_run(storage, root, run_id, {**info, "budget": budget_credits, "runs_root": str(root), "priority": priority},
             manifests)
    live_info = {"runs_root": str(root), **{k: v for k, v in info.items() if k == "retry_of"}}
    return enqueue(app, storage, client, shards, run_id=run_id, force=force, budget_credits=budget_credits,
                   info=live_info, entries=entries, overwrite=overwrite, priority=priority)
