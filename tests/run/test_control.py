"""Run control on the in-memory S3: a cancel is kept in control.json and in Redis, once; reconcile tells a cancelled
run's untouched lines from missing ones, and retry leaves them out unless asked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.errors import ConfigError, RunCancelled
from pipeline.manifest.load import ManifestLimits
from pipeline.report.reconcile import reconcile
from pipeline.run.control import RunControl, cancel_run, control_uri, load_control
from pipeline.run.retry import plan_retry
from pipeline.run.state import RunState
from pipeline.run.stored import save_run
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.examples import example_failure, example_provenance
from pipeline.storage.memory import MemoryS3
from pipeline.storage.records import commit, record_failure
from pipeline.storage.s3 import Storage
from tests.report.test_reconcile import identity, line, make_shard

ROOT = S3Uri("out-bucket", "sts-runs")


class FakeRedis:
    """The two string commands RunState's cancel uses."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, key: str, value: str, **_: Any) -> None:
        self.values[key] = value

    def get(self, key: str) -> bytes | None:
        value = self.values.get(key)
        return value.encode() if value is not None else None


@pytest.fixture
def storage() -> Storage:
    store = Storage(MemoryS3())
    store.ensure_bucket("out-bucket")
    save_run(store, ROOT, "run-1", {"output_prefix": None}, {"a.jsonl": b"{}\n"})
    return store


def test_cancel_is_recorded_in_s3_and_redis_once(storage: Storage) -> None:
    client = FakeRedis()
    first = cancel_run(storage, client, ROOT, "run-1", why="wrong voice\x1b[2J", who="ana@box")  # type: ignore[arg-type]
    again = cancel_run(storage, client, ROOT, "run-1", why="again", who="bo@box")  # type: ignore[arg-type]
    assert again == first and first.who == "ana@box" and "\x1b" not in first.why
    control = load_control(storage, ROOT, "run-1")
    assert control.cancelled and len(control.actions) == 1 and control.state == "cancelled"
    stored, _ = storage.get_json(control_uri(ROOT, "run-1")) or ({}, "")
    assert stored["actions"][0]["why"].startswith("wrong voice") and stored["state"] == "cancelled"
    live = RunState(client, "run-1").cancelled()  # type: ignore[arg-type]
    assert live is not None and json.loads(live)["who"] == "ana@box"


def test_cancel_of_an_unknown_run_is_refused(storage: Storage) -> None:
    client = FakeRedis()
    with pytest.raises(ConfigError):
        cancel_run(storage, client, ROOT, "no-such-run")  # type: ignore[arg-type]
    assert client.values == {}
    assert not load_control(storage, ROOT, "no-such-run").cancelled
    assert RunControl.from_dict({"schema": "other"}).actions == []


def test_reconcile_and_retry_of_a_cancelled_run(storage: Storage) -> None:
    shard = make_shard("a.jsonl", [line("a", n) for n in range(1, 5)])
    done, stopped, _, _ = shard.entries
    commit(storage, S3Uri.parse(done.output), example_provenance(identity(done)))
    record_failure(storage, S3Uri.parse(stopped.output),
                   example_failure(identity(stopped), RunCancelled("the run was cancelled")))
    plain = reconcile(storage, [shard])
    assert [r.state for r in plain.results] == [JobState.SUCCEEDED, JobState.CANCELLED, JobState.MISSING,
                                                JobState.MISSING]
    report = reconcile(storage, [shard], cancelled=True)
    assert [r.state for r in report.results] == [JobState.SUCCEEDED] + [JobState.CANCELLED] * 3
    assert report.totals().counts[JobState.MISSING] == 0 and report.totals().counts[JobState.CANCELLED] == 3
    assert report.results[1].reason == "cancelled"
    limits = ManifestLimits()
    skipped = plan_retry(storage, [shard], run_id="run-1", output_prefix=None, limits=limits, cancelled=True)
    assert skipped.chosen == []
    included = plan_retry(storage, [shard], run_id="run-1", output_prefix=None, limits=limits, cancelled=True,
                          include_cancelled=True)
    assert [r.entry.line for r in included.chosen] == [2, 3, 4]
