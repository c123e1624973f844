"""Retry: from what S3 says about a run to a new run of only the jobs that did not succeed, with the same job ids.

The retry's manifests are the lines as the user wrote them (so every file is a valid manifest of its own), stored as
a run of their own, so ``reconcile --run NEW_ID`` works on a retry too.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from pipeline.errors import PipelineError, RunConflict
from pipeline.manifest.load import ManifestEntry, ManifestLimits, Shard, parse_manifest, write_manifest
from pipeline.report.reconcile import JobResult, reconcile
from pipeline.run.state import RunState
from pipeline.states import JobState
from pipeline.storage.s3 import Storage

__all__ = ["RetryPlan", "check_not_running", "plan_retry", "retry_lines", "retry_manifest_bytes",
           "write_retry_manifests"]


@dataclass(frozen=True)
class RetryPlan:
    """What a retry would enqueue, and what it leaves out."""

    chosen: list[JobResult]
    rejected_left_out: int
    manifests: dict[str, bytes]  # shard name -> the retry manifest's bytes
    shards: list[Shard]

    @property
    def entries(self) -> list[ManifestEntry]:
        return [entry for shard in self.shards for entry in shard.entries]


def check_not_running(client: redis.Redis, run_id: str) -> None:
    """``RunConflict`` if Redis says the run still has queued or running jobs (a retry would run them twice)."""
    live = RunState(client, run_id).counts()
    active = sum(live.get(state.value, 0) for state in (JobState.QUEUED, JobState.RUNNING))
    if active:
        raise RunConflict(
            f"run {run_id} still has {active} queued or running job(s) in Redis; retrying now would run them twice. "
            f"Wait (sts-pipeline status {run_id} --watch) or pass --even-if-running")


def plan_retry(storage: Storage, shards: Sequence[Shard], *, run_id: str | None, output_prefix: str | None,
               limits: ManifestLimits, include_rejected: bool = False, only_shards: Iterable[str] = (),
               cancelled: bool = False, include_cancelled: bool = False) -> RetryPlan:
    """Reconcile ``shards`` and build the manifests of the jobs to re-run; their lines read back to the same jobs.

    ``cancelled``: the run was cancelled (its untouched lines are ``cancelled``); those and the jobs that ended
    ``cancelled`` are re-run only with ``include_cancelled``.
    """
    only = set(only_shards)
    report = reconcile(storage, shards, fetch_records=False, run_id=run_id, cancelled=cancelled)
    chosen = report.to_retry(include_rejected=include_rejected, shards=only, include_cancelled=include_cancelled)
    left_out = 0 if include_rejected else sum(
        1 for r in report.in_state(JobState.REJECTED) if not only or r.entry.shard in only)
    manifests = retry_manifest_bytes(chosen)
    parsed = [parse_manifest(data, name, output_prefix=output_prefix, limits=limits)
              for name, data in sorted(manifests.items())]
    plan = RetryPlan(chosen, left_out, manifests, parsed)
    if sorted(e.job_id for e in plan.entries) != sorted(r.entry.job_id for r in chosen):
        raise PipelineError("the retry manifests did not read back to the same jobs (their outputs would land "
                            "elsewhere); nothing was enqueued. Please report this with the manifest lines.")
    return plan


def retry_lines(results: Iterable[JobResult]) -> dict[str, list[dict[str, Any]]]:
    """Each shard's lines to re-run, as the user wrote them (so every file is a valid manifest), in line order."""
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in sorted(results, key=lambda r: (r.entry.shard, r.entry.line)):
        lines[result.entry.shard].append(result.entry.raw)
    return dict(lines)


def write_retry_manifests(target: str | Path, results: Iterable[JobResult]) -> list[Path]:
    """Write the lines to re-run; return the files written (none when there is nothing to re-run).

    ``target`` a directory (it exists, or ends with ``/``): one file per shard, named like the shard. Otherwise one
    file holding every shard's lines, in the format its suffix names.
    """
    lines = retry_lines(results)
    if not lines:
        return []
    path = Path(target)
    if path.is_dir() or str(target).endswith(("/", os.sep)):
        path.mkdir(parents=True, exist_ok=True)
        for name, shard_lines in lines.items():
            write_manifest(path / name, shard_lines)
        return [path / name for name in lines]
    write_manifest(path, [line for shard_lines in lines.values() for line in shard_lines])
    return [path]


def retry_manifest_bytes(results: Iterable[JobResult]) -> dict[str, bytes]:
    """The retry manifests' bytes, one per shard named like it (what a retry run stores and enqueues)."""
    lines = retry_lines(results)
    with tempfile.TemporaryDirectory(prefix="sts-retry-") as tmp:
        out: dict[str, bytes] = {}
        for name, shard_lines in lines.items():
            target = Path(tmp) / name
            write_manifest(target, shard_lines)
            out[name] = target.read_bytes()
    return out
