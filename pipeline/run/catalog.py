"""The recent runs, from S3 alone (so ``sts-pipeline runs`` works on any machine): one LIST of the runs root.

A run's state comes from what is stored beside it (``pipeline.run.stored``):

    results.jsonl there        finished   (counts and credits are read from it; its time is the end)
    control.json says cancel   cancelled  (finished or not; until results.jsonl is there, the cancel's time is the
                                           end, and the jobs in flight may still be finishing)
    control.json says pause    paused     (its last pause was not followed by a resume)
    none of these              running    (counts come from Redis, when the caller has it)

The start is run.json's LastModified (the moment submit stored the run's copy).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.report.results import RESULTS_NAME
from pipeline.run.control import load_control
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

__all__ = ["RunSummary", "recent_runs"]


@dataclass
class RunSummary:
    """One run as ``runs`` lists it."""

    run_id: str
    state: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    credits: float | None = None
    retry_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.state, "retry_of": self.retry_of,
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "counts": self.counts, "credits": self.credits}


def _listed(storage: Storage, root: S3Uri) -> dict[str, dict[str, datetime | None]]:
    """run id -> {file name: LastModified} for the files that tell a run's state."""
    prefix = f"{root.key}/" if root.key else ""
    runs: dict[str, dict[str, datetime | None]] = {}
    for item in storage.list(root.bucket, prefix):
        rest = item.uri.key[len(prefix):]
        run_id, _, name = rest.partition("/")
        if name in ("run.json", "control.json", RESULTS_NAME):
            runs.setdefault(run_id, {})[name] = item.last_modified
    return {run_id: files for run_id, files in runs.items() if "run.json" in files}


def _tally(storage: Storage, uri: S3Uri) -> tuple[dict[str, int], float]:
    counts: Counter[str] = Counter()
    credits = 0.0
    for text in storage.get_bytes(uri).decode().splitlines():
        line = json.loads(text)
        counts[str(line.get("state"))] += 1
        credits += float(line.get("credits") or 0.0)
    return dict(counts), round(credits, 6)


def recent_runs(storage: Storage, root: S3Uri, *, limit: int = 20) -> list[RunSummary]:
    """The ``limit`` most recently started runs under ``root``, newest first."""
    def started(item: tuple[str, dict[str, datetime | None]]) -> tuple[float, str]:
        when = item[1]["run.json"]
        return (when.timestamp() if when else 0.0, item[0])

    listed = sorted(_listed(storage, root).items(), key=started, reverse=True)[:limit]
    summaries = []
    for run_id, files in listed:
        base = S3Uri(root.bucket, "/".join(p for p in (root.key, run_id) if p))
        found = storage.get_json(base.child("/run.json"))
        info = found[0] if found else {}
        summary = RunSummary(run_id, "running", started_at=files["run.json"],
                             retry_of=info.get("retry_of") if isinstance(info.get("retry_of"), str) else None)
        control = load_control(storage, root, run_id) if "control.json" in files else None
        cancelled = control is not None and control.cancelled
        if cancelled:
            summary.state, summary.ended_at = "cancelled", files["control.json"]
        elif control is not None and control.paused:
            summary.state = "paused"
        if RESULTS_NAME in files:
            summary.state = "cancelled" if cancelled else "finished"
            summary.ended_at = files[RESULTS_NAME]
            summary.counts, summary.credits = _tally(storage, base.child("/" + RESULTS_NAME))
        summaries.append(summary)
    return summaries
