"""reconcile, retry and status against the real moto S3 server and redis-server.

Records are written with the worker's own functions (``provenance.commit``, ``provenance.record_failure``) in the
shape ``convert.py`` gives them. Redis is out of reach while reconciling, to show the answer comes from S3 alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.config import Settings, get_settings
from pipeline.errors import ApiError, BudgetExceededError, InputError
from pipeline.local.services import LocalStack, free_port
from pipeline.manifest.load import Shard, load_manifests
from pipeline.report.reconcile import reconcile
from pipeline.run.state import RunState
from pipeline.run.stored import load_run, save_run
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.records import commit, failure_uri, record_failure
from pipeline.storage.s3 import Storage
from tests.report.test_reconcile import failure, line, provenance, rejected_error

EXPECTED = {"a.jsonl:1": "succeeded", "a.jsonl:2": "succeeded", "a.jsonl:3": "failed", "a.jsonl:4": "rejected",
            "a.jsonl:5": "missing", "b.jsonl:1": "succeeded", "b.jsonl:2": "deferred", "b.jsonl:3": "orphan",
            "b.jsonl:4": "failed"}


@contextmanager
def cli_env(stack: LocalStack, **extra: str) -> Iterator[None]:
    with stack.applied():
        import os

        # S3 is what these tests are about; the account preflight (test_preflight_and_quota) stays out of their retries
        os.environ.update({"STS_PREFLIGHT": "0", **extra})
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def cli(stack: LocalStack, *args: str, **env: str) -> Result:
    with cli_env(stack, **env):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)


def no_redis() -> dict[str, str]:
    """Settings that point Redis at a port nothing listens on: any use of it would fail."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    return {"STS_BROKER_URL": dead, "STS_LIMITER_URL": dead}


def storage_for(stack: LocalStack) -> Storage:
    with stack.applied():
        return Storage.from_settings(Settings())


def write_scenario(storage: Storage, bucket: str, tmp: Path) -> list[Path]:
    """Two shards whose lines end in every state (see EXPECTED); a.jsonl:6 is not a valid line."""
    a = [line("a", n, bucket) for n in range(1, 6)] + [{**line("a", 6, bucket), "voice_id": "not a voice!"}]
    b = [line("b", n, bucket) for n in range(1, 5)]
    paths = [tmp / "a.jsonl", tmp / "b.jsonl"]
    for path, lines in zip(paths, (a, b), strict=False):
        path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    shard_a, shard_b = load_manifests(paths)
    ea, eb = shard_a.entries, shard_b.entries

    def done(entry, **kwargs) -> None:  # type: ignore[no-untyped-def]
        out = S3Uri.parse(entry.output)
        storage.put_bytes(out, b"converted audio", content_type="audio/mpeg")
        assert commit(storage, out, provenance(entry, **kwargs))

    done(ea[0], credits=50, finished_at="2025-03-01T10:00:10+00:00")
    done(ea[1], credits=30, finished_at="2025-03-01T10:02:10+00:00")
    # a stale failure record beside a committed output (an earlier attempt's): the success must win
    storage.put_json(failure_uri(S3Uri.parse(ea[1].output)), failure(ea[1], InputError("x", reason="not_audio")))
    missing_input = InputError("input s3://in-bucket/a/3.wav does not exist", reason="missing_input")
    record_failure(storage, S3Uri.parse(ea[2].output), failure(ea[2], missing_input))
    record_failure(storage, S3Uri.parse(ea[3].output), failure(ea[3], rejected_error()))
    done(eb[0], credits=20, flags=("too_loud",), lufs=-7.5)
    record_failure(storage, S3Uri.parse(eb[1].output),
                   failure(eb[1], BudgetExceededError("the run's budget of 100 credits is spent")))
    storage.put_bytes(S3Uri.parse(eb[2].output), b"uploaded, never committed")
    record_failure(storage, S3Uri.parse(eb[3].output),
                   failure(eb[3], ApiError("voice not found", status=404, request_id="req-404"), credits=1.5))
    return paths


def stored_run(storage: Storage, bucket: str, paths: list[Path]) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    save_run(storage, S3Uri(bucket, "sts-runs"), run_id, {"output_prefix": None},
             {path.name: path.read_bytes() for path in paths})
    return run_id


def test_every_state_from_s3(stack: LocalStack, bucket: str, tmp_path: Path) -> None:
    storage = storage_for(stack)
    shards: list[Shard] = load_manifests(write_scenario(storage, bucket, tmp_path))
    report = reconcile(storage, shards)
    assert {r.where.rsplit("/", 1)[-1]: r.state.value for r in report.results} == EXPECTED
    assert [r.where.rsplit("/", 1)[-1] for r in report.orphans] == ["b.jsonl:3"]
    assert report.totals().credits == 101.5 and report.flag_counts() == {"too_loud": 1}
    assert [g.key for g in report.groups(JobState.FAILED)] == ["http_404", "missing_input"]
    # without provenance reads the states are the same; only the failure records' cost is known
    light = reconcile(storage, shards, fetch_records=False)
    assert [r.state for r in light.results] == [r.state for r in report.results]
    assert light.totals().credits == 1.5
    # a failure record that is not JSON is reported, not a crash
    storage.put_bytes(failure_uri(S3Uri.parse(shards[0].entries[4].output)), b"{half a record")
    garbled = reconcile(storage, shards).results[4]
    assert (garbled.state, garbled.reason) == (JobState.FAILED, "unreadable_record")


def test_reconcile_cli_from_s3_alone(stack: LocalStack, bucket: str, tmp_path: Path) -> None:
    storage = storage_for(stack)
    paths = write_scenario(storage, bucket, tmp_path)
    retry_dir, csv_path = tmp_path / "retry", tmp_path / "jobs.csv"
    result = cli(stack, "reconcile", *map(str, paths), "--json", "--csv", str(csv_path),
                 "--retry-manifest", f"{retry_dir}/", **no_redis())
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["totals"] == {"lines": 10, "jobs": 9, "succeeded": 3, "failed": 2, "rejected": 1, "deferred": 1,
                              "orphan": 1, "missing": 1, "cancelled": 0, "invalid": 1, "credits": 101.5,
                              "requests": 6}
    assert [s["succeeded"] for s in data["shards"]] == [2, 1]
    assert data["rejected"][0]["message"] == "voice_settings.stability: Input should be less than or equal to 1"
    assert data["invalid"][0]["where"].endswith("a.jsonl:6")
    assert (retry_dir / "a.jsonl").read_text().splitlines() == [json.dumps(line("a", n, bucket)) for n in (3, 5)]
    assert (retry_dir / "b.jsonl").read_text().splitlines() == [json.dumps(line("b", n, bucket)) for n in (2, 3, 4)]
    assert len(csv_path.read_text().splitlines()) == 11

    run_id = stored_run(storage, bucket, paths)
    table = cli(stack, "reconcile", "--run", run_id, "--runs-uri", f"s3://{bucket}/sts-runs", **no_redis())
    assert table.exit_code == 1
    assert "a.jsonl" in table.stdout and "did not succeed" in table.stdout and f"retry --run {run_id}" in table.stdout
    stored = cli(stack, "reconcile", "--run", run_id, "--runs-uri", f"s3://{bucket}/sts-runs", "--json", **no_redis())
    assert json.loads(stored.stdout)["totals"] == data["totals"]

    gone = cli(stack, "reconcile", "--run", "no-such-run", "--runs-uri", f"s3://{bucket}/sts-runs")
    assert gone.exit_code == 2 and "no run 'no-such-run'" in gone.output


def test_reconcile_exits_0_only_when_every_line_succeeded(stack: LocalStack, bucket: str, tmp_path: Path) -> None:
    storage = storage_for(stack)
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(line("c", n, bucket)) + "\n" for n in (1, 2)))
    entries = load_manifests([path])[0].entries
    for entry in entries:
        storage.put_bytes(S3Uri.parse(entry.output), b"audio")
        commit(storage, S3Uri.parse(entry.output), provenance(entry))
    result = cli(stack, "reconcile", str(path), **no_redis())
    assert result.exit_code == 0 and "all 2 jobs succeeded" in result.stdout
    path.write_text(path.read_text() + json.dumps(line("c", 3, bucket)) + "\n")
    assert cli(stack, "reconcile", str(path), **no_redis()).exit_code == 1


def _queued_job_ids(client: redis.Redis, queue: str, run_id: str) -> list[str]:
    ids = [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]
    assert all(task_id.startswith(f"{run_id}:") for task_id in ids)
    return sorted(task_id.split(":", 1)[1] for task_id in ids)


def test_retry_requeues_only_what_did_not_succeed(stack: LocalStack, bucket: str, tmp_path: Path) -> None:
    storage = storage_for(stack)
    paths = write_scenario(storage, bucket, tmp_path)
    shards = load_manifests(paths)
    job_ids = {f"{e.shard}:{e.line}": e.job_id for shard in shards for e in shard.entries}
    run_id = stored_run(storage, bucket, paths)
    runs = ("--runs-uri", f"s3://{bucket}/sts-runs")
    client = redis.Redis.from_url(stack.redis_url)
    queue = f"q-{uuid.uuid4().hex[:8]}"

    result = cli(stack, "retry", "--run", run_id, *runs, STS_QUEUE=queue)
    assert result.exit_code == 0, result.output
    new_id = result.stdout.strip()
    assert new_id != run_id and "1 rejected (422) job(s) left out" in result.stderr
    retried = ["a.jsonl:3", "a.jsonl:5", "b.jsonl:2", "b.jsonl:3", "b.jsonl:4"]
    assert _queued_job_ids(client, queue, new_id) == sorted(job_ids[w] for w in retried)
    assert RunState(client, new_id).counts() == {"queued": 5}
    stored = load_run(storage, S3Uri(bucket, "sts-runs"), new_id)
    assert stored.info["retry_of"] == run_id
    assert stored.manifests["a.jsonl"].decode().splitlines() == [json.dumps(line("a", n, bucket)) for n in (3, 5)]
    assert stored.manifests["b.jsonl"].decode().splitlines() == [json.dumps(line("b", n, bucket))
                                                                 for n in (2, 3, 4)]
    again = cli(stack, "reconcile", "--run", new_id, *runs, "--json", **no_redis())
    assert json.loads(again.stdout)["totals"]["lines"] == 5 and again.exit_code == 1

    other = f"q-{uuid.uuid4().hex[:8]}"
    only_a = cli(stack, "retry", "--run", run_id, *runs, "--include-rejected", "--shard", "a.jsonl", STS_QUEUE=other)
    assert only_a.exit_code == 0, only_a.output
    assert _queued_job_ids(client, other, only_a.stdout.strip()) == sorted(
        job_ids[w] for w in ("a.jsonl:3", "a.jsonl:4", "a.jsonl:5"))

    # while the run still has jobs in flight, a retry would run them twice: refused unless asked for
    RunState(client, run_id).mark_many([job_ids["a.jsonl:5"]], JobState.QUEUED)
    busy = cli(stack, "retry", "--run", run_id, *runs, STS_QUEUE=other)
    assert busy.exit_code == 2 and "still has 1 queued or running" in busy.output
    forced = cli(stack, "retry", "--run", run_id, *runs, "--even-if-running", STS_QUEUE=other)
    assert forced.exit_code == 0, forced.output
    bad_shard = cli(stack, "retry", "--run", run_id, *runs, "--shard", "zzz.jsonl", "--even-if-running")
    assert bad_shard.exit_code == 2 and "no shard named zzz.jsonl" in bad_shard.output


def test_status_shows_live_counts_or_points_to_reconcile(stack: LocalStack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    state = RunState(client, run_id)
    state.init({"jobs": "4", "shards": "a.jsonl"})
    state.mark_many(["j1", "j2"], JobState.SUCCEEDED)
    state.mark("j3", JobState.FAILED)
    state.mark("j4", JobState.RUNNING)
    shown = cli(stack, "status", run_id)
    assert shown.exit_code == 0, shown.output
    cells = [[cell.strip() for cell in row.strip("│ ").split("│")] for row in shown.stdout.splitlines()]
    counts = {row[0]: row[1] for row in cells if len(row) == 2}
    assert [counts[s] for s in ("queued", "running", "succeeded", "failed", "rejected")] == ["0", "1", "2", "1", "0"]
    assert "3 of 4 done" in shown.stdout
    state.mark("j4", JobState.SUCCEEDED)
    assert cli(stack, "status", run_id, "--watch").exit_code == 0  # every job is done: the watch ends at once
    gone = cli(stack, "status", "run-never-was")
    assert gone.exit_code == 1
    assert "Redis has no state for run run-never-was (expired or flushed)" in gone.stderr
    assert "sts-pipeline reconcile --run run-never-was" in gone.stderr
