"""``runs`` from S3 alone: newest first; finished (counts and credits from results.jsonl), cancelled, running."""

from __future__ import annotations

import time

from pipeline.report.reconcile import reconcile
from pipeline.report.results import write_results
from pipeline.run.catalog import recent_runs
from pipeline.run.control import cancel_run
from pipeline.run.stored import run_prefix, save_run
from pipeline.s3uri import S3Uri
from pipeline.storage.examples import example_provenance
from pipeline.storage.memory import MemoryS3
from pipeline.storage.records import commit
from pipeline.storage.s3 import Storage
from tests.report.test_reconcile import identity, line, make_shard
from tests.run.test_control import FakeRedis

ROOT = S3Uri("out-bucket", "sts-runs")


def test_recent_runs_newest_first_with_their_state() -> None:
    storage = Storage(MemoryS3())
    storage.ensure_bucket("out-bucket")
    for run_id in ("run-old", "run-mid", "run-new"):
        save_run(storage, ROOT, run_id, {"output_prefix": None, **({"retry_of": "run-old"}
                                                                   if run_id == "run-new" else {})}, {"a.jsonl": b""})
        time.sleep(0.01)
    shard = make_shard("a.jsonl", [line("a", 1), line("a", 2)])
    commit(storage, S3Uri.parse(shard.entries[0].output), example_provenance(identity(shard.entries[0])))
    write_results(storage, run_prefix(ROOT, "run-old"), reconcile(storage, [shard]))
    cancel_run(storage, FakeRedis(), ROOT, "run-mid", why="budget")  # type: ignore[arg-type]
    runs = recent_runs(storage, ROOT)
    assert [(r.run_id, r.state) for r in runs] == [("run-new", "running"), ("run-mid", "cancelled"),
                                                   ("run-old", "finished")]
    old = runs[2]
    assert old.counts == {"succeeded": 1, "missing": 1} and old.credits == 50.0
    assert old.started_at is not None and old.ended_at is not None and old.ended_at >= old.started_at
    assert runs[0].retry_of == "run-old" and runs[0].ended_at is None
    assert runs[1].to_dict()["state"] == "cancelled"
    assert [r.run_id for r in recent_runs(storage, ROOT, limit=1)] == ["run-new"]
