"""On a real redis-server: a job's claim (one delivery converts it at a time), the worker's guards around a job (claim,
foreign objects, reserved keys, unexpected exceptions), and the start-up check of the broker's eviction policy.

The job tests run ``run_job`` in-process on an in-memory S3 with the conversion itself (``_make``) replaced, so they
show what happens before and instead of spending; ``test_hostile_keys.py`` runs the same cases through real workers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.api.client import StsClient
from pipeline.api.limiter import Limiter
from pipeline.config import Settings
from pipeline.conversion import job as job_module
from pipeline.conversion.claim import JobClaim, JobClaimed
from pipeline.conversion.context import WorkerContext
from pipeline.errors import (
    BrokerError,
    ConfigError,
    InputError,
    SlotUnavailableError,
    StorageUnavailableError,
    register_secret,
)
from pipeline.local.services import free_port, wait_for_port
from pipeline.run.broker import FIX_COMMAND, FIX_CONF_LINE, broker_health, check_broker
from pipeline.run.message import JobMessage
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.memory import memory_storage
from pipeline.storage.records import failure_uri, provenance_uri
from pipeline.storage.s3 import Storage

BUCKET = "claims-out"


# --- the claim itself

def test_one_delivery_holds_a_claim_and_only_its_owner_releases_it(redis_client: redis.Redis) -> None:
    first, second = JobClaim(redis_client, "job-a", ttl_s=5), JobClaim(redis_client, "job-a", ttl_s=5)
    assert first.try_acquire()
    assert not second.try_acquire()
    second.release()  # not held: nothing happens
    assert redis_client.exists(first.key)
    redis_client.set(first.key, "someone-else")  # the claim lapsed and another delivery took it
    first.release()
    assert redis_client.get(first.key) == b"someone-else"  # compare-and-delete: never someone else's claim


def test_a_claim_is_renewed_while_held_and_lapses_when_its_holder_is_gone(redis_client: redis.Redis) -> None:
    held = JobClaim(redis_client, "job-b", ttl_s=1.2)
    assert held.try_acquire()
    time.sleep(2.5)  # twice the time to live: only renewals keep it
    assert redis_client.get(held.key) is not None and not held.lost
    held._stop.set()  # the holder dies: no more renewals, no release
    time.sleep(1.6)
    assert JobClaim(redis_client, "job-b", ttl_s=1.2).try_acquire()


def test_a_waiting_delivery_gets_the_claim_when_it_is_released(redis_client: redis.Redis) -> None:
    held = JobClaim(redis_client, "job-c", ttl_s=10)
    assert held.try_acquire()
    threading.Timer(0.5, held.release).start()
    waiting = JobClaim(redis_client, "job-c", ttl_s=10)
    started = time.monotonic()
    assert waiting.acquire(5.0)
    assert 0.4 < time.monotonic() - started < 3
    waiting.release()
    again = JobClaim(redis_client, "job-c")
    assert again.try_acquire()  # free again
    again.release()


def test_a_claim_renewal_that_finds_it_taken_says_so(redis_client: redis.Redis) -> None:
    held = JobClaim(redis_client, "job-d", ttl_s=1.0)
    assert held.try_acquire()
    redis_client.set(held.key, "another-delivery")
    time.sleep(0.8)
    assert held.lost
    held.release()


# --- run_job's guards, with the conversion replaced

class Spent(SlotUnavailableError):
    """Raised by the stand-in conversion: reaching it means the job would have spent (a re-queue error, so it
    passes through run_job's own handling)."""


@pytest.fixture
def worker(redis_client: redis.Redis) -> Iterator[WorkerContext]:
    settings = Settings(api_key="sk_" + "0" * 48, api_base_url="http://127.0.0.1:9", claim_wait_s=0.6,
                        claim_ttl_s=5)
    storage = memory_storage(BUCKET, "claims-in")
    storage.put_bytes(S3Uri("claims-in", "a.wav"), b"RIFF")
    client = StsClient(settings.api_base_url, settings.api_key_value() or "")
    yield WorkerContext(settings=settings, client=client, limiter=Limiter.from_settings(settings, redis_client),
                        storage=storage, redis=redis_client)
    client.close()


def _message(output: str = f"s3://{BUCKET}/out/a.pcm", **job: Any) -> JobMessage:
    line = {"input": "s3://claims-in/a.wav", "voice_id": "voice1", "output": output, "output_format": "pcm_16000",
            **job}
    return JobMessage(run_id="run-claims", shard="m.jsonl", line=1, job_id="job-claims-1", output=output, job=line,
                      queued_at=time.time())


@pytest.fixture
def spend(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake_make(ctx: Any, job: Any, output: S3Uri, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(output))
        raise Spent(str(output))

    monkeypatch.setattr(job_module, "_make", fake_make)
    return calls


def _failure(storage: Storage, output: str) -> dict[str, Any]:
    found = storage.get_json(failure_uri(S3Uri.parse(output)))
    assert found is not None, "no failure record"
    return found[0]


def test_a_second_delivery_waits_for_the_claim_then_stops_if_the_job_committed(
        worker: WorkerContext, redis_client: redis.Redis, spend: list[str]) -> None:
    message = _message()
    other = JobClaim(redis_client, message.job_id, ttl_s=10)
    assert other.try_acquire()

    def finish() -> None:  # the delivery holding the claim commits while this one waits
        worker.storage.put_json(provenance_uri(S3Uri.parse(message.output)), {"schema": "x"})

    threading.Timer(0.2, finish).start()
    assert job_module.run_job(worker.for_job(message)) is JobState.SUCCEEDED
    assert spend == []
    other.release()


def test_a_second_delivery_goes_back_to_the_queue_while_the_claim_is_held(
        worker: WorkerContext, redis_client: redis.Redis, spend: list[str]) -> None:
    message = _message()
    other = JobClaim(redis_client, message.job_id, ttl_s=10)
    assert other.try_acquire()
    with pytest.raises(JobClaimed, match="being converted by another delivery"):
        job_module.run_job(worker.for_job(message))
    assert spend == [] and worker.storage.get_json(failure_uri(S3Uri.parse(message.output))) is None
    other.release()
    with pytest.raises(Spent):  # once free, the job runs (and its claim is released at the end)
        job_module.run_job(worker.for_job(message))
    assert redis_client.get(other.key) is None


def test_a_foreign_object_at_the_output_fails_the_job_before_it_spends(
        worker: WorkerContext, spend: list[str]) -> None:
    message = _message()
    worker.storage.put_bytes(S3Uri.parse(message.output), b"the master recording")
    assert job_module.run_job(worker.for_job(message)) is JobState.FAILED
    assert spend == []
    record = _failure(worker.storage, message.output)
    assert record["error"]["reason"] == "output_exists"
    assert '"overwrite": true' in record["error"]["message"] and "--overwrite" in record["error"]["message"]
    assert worker.storage.get_bytes(S3Uri.parse(message.output)) == b"the master recording"


def test_overwrite_lets_a_job_replace_a_foreign_object(worker: WorkerContext, spend: list[str]) -> None:
    message = _message(overwrite=True)
    worker.storage.put_bytes(S3Uri.parse(message.output), b"the master recording")
    with pytest.raises(Spent):
        job_module.run_job(worker.for_job(message))
    assert spend == [message.output]


def test_an_output_the_pipeline_uploaded_but_never_committed_is_its_own(
        worker: WorkerContext, spend: list[str], tmp_path: Path) -> None:
    message = _message()
    uploaded = tmp_path / "a.pcm"
    uploaded.write_bytes(b"\x00\x01" * 100)
    worker.storage.upload_file(uploaded, S3Uri.parse(message.output), content_type="audio/pcm", sha256="ab" * 32)
    with pytest.raises(Spent):
        job_module.run_job(worker.for_job(message))


@pytest.mark.parametrize(("output", "reason"), [
    (f"s3://{BUCKET}/out/b.pcm.provenance.json", "reserved_key"),
    (f"s3://{BUCKET}/out/b.pcm.work/seg-0000.pcm_16000", "reserved_key"),
    (f"s3://{BUCKET}/sts-runs/run-1/run.json", "reserved_key"),
    (f"s3://{BUCKET}/" + "k" * 1016 + ".pcm", "key_too_long"),
])
def test_the_worker_refuses_a_reserved_output_key_again(worker: WorkerContext, spend: list[str], output: str,
                                                        reason: str) -> None:
    assert job_module.run_job(worker.for_job(_message(output))) is JobState.FAILED
    assert spend == []
    if reason != "key_too_long":  # that one's record has no key S3 would take
        assert _failure(worker.storage, output)["error"]["reason"] == reason


def test_an_unexpected_exception_ends_the_job_failed_with_a_record(
        worker: WorkerContext, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_" + "7" * 48
    register_secret(key)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"odd value \x1b[31m{key}\x1b[0m in /home/worker/secret/path.py")

    monkeypatch.setattr(job_module, "_make", broken)
    message = _message()
    assert job_module.run_job(worker.for_job(message)) is JobState.FAILED
    record = _failure(worker.storage, message.output)
    error = record["error"]
    assert error["reason"] == "internal_error" and error["error_class"] == "InternalError"
    assert error["message"].startswith("internal error ValueError: odd value \\x1b[31m***\\x1b[0m")
    assert "Traceback" not in json.dumps(record) and key not in json.dumps(record)
    assert redis_client.hget("sts:run:run-claims:jobs", message.job_id) in (b"failed", None)
    assert redis_client.get(f"sts:claim:{message.job_id}") is None  # the claim was released


def test_storage_and_slot_faults_still_go_back_to_the_queue(worker: WorkerContext,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for error in (SlotUnavailableError("no slot"), StorageUnavailableError("S3 did not answer")):
        def raising(*args: Any, _error: Exception = error, **kwargs: Any) -> Any:
            raise _error

        monkeypatch.setattr(job_module, "_make", raising)
        with pytest.raises(type(error)):
            job_module.run_job(worker.for_job(_message()))


def test_a_task_message_that_cannot_be_read_is_dropped_not_raised(worker: WorkerContext) -> None:
    message = JobMessage(run_id="run-claims", shard="m.jsonl", line=1, job_id="job-bad", output="not-a-uri",
                         job={"voice_id": 3}, queued_at=time.time())
    assert job_module.run_job(worker.for_job(message)) is JobState.FAILED


def test_a_refusal_in_the_commit_check_ends_with_a_record(worker: WorkerContext, spend: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> bool:
        raise InputError("S3 refused access (AccessDenied)", reason="s3_access_denied")

    monkeypatch.setattr(job_module, "is_committed", refused)
    assert job_module.run_job(worker.for_job(_message())) is JobState.FAILED
    assert spend == []


# --- the broker's eviction policy, on a redis-server of this test's own

@pytest.fixture
def evicting(tmp_path: Path) -> Iterator[str]:
    """A redis-server with maxmemory-policy allkeys-lru and no persistence (its URL)."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                             "--maxmemory-policy", "allkeys-lru"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 20, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_evicting_broker_is_refused_with_the_fix(evicting: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_broker(Settings(broker_url=evicting), warn=lambda _line: None)
    message = refused.value.message
    assert "maxmemory-policy allkeys-lru" in message and FIX_COMMAND in message and FIX_CONF_LINE in message
    assert "STS_ALLOW_EVICTING_BROKER=1" in message


def test_the_override_goes_on_with_a_warning_and_persistence_off_is_said(evicting: str) -> None:
    warnings: list[str] = []
    check_broker(Settings(broker_url=evicting, allow_evicting_broker=True), warn=warnings.append)
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: Redis at redis://127.0.0.1:") and "going on" in warnings[0]
    assert "keeps nothing on disk" in warnings[1]


def test_a_noeviction_broker_passes_and_a_limiter_redis_is_checked_too(stack: Any, evicting: str) -> None:
    warnings: list[str] = []
    check_broker(Settings(broker_url=stack.redis_url), warn=warnings.append)
    assert [w for w in warnings if "maxmemory" in w] == []
    with pytest.raises(ConfigError, match="allkeys-lru"):
        check_broker(Settings(broker_url=stack.redis_url, limiter_url=evicting), warn=lambda _line: None)


def test_without_config_the_policy_is_read_from_info(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--dir", str(tmp_path), "--maxmemory-policy", "volatile-lru",
                             "--rename-command", "CONFIG", ""], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 20, proc)
        client = redis.Redis(host="127.0.0.1", port=port)
        assert broker_health(client).maxmemory_policy == "volatile-lru"
        client.close()
        with pytest.raises(ConfigError, match="volatile-lru"):
            check_broker(Settings(broker_url=f"redis://127.0.0.1:{port}/0"), warn=lambda _line: None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_broker_that_does_not_answer_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="did not answer") as failed:
        check_broker(Settings(broker_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0"), warn=lambda _line: None)
    assert "hunter2" not in failed.value.message
