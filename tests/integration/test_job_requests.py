"""What one job asks of S3: a worker's jobs share one bucket check, the commit check comes after the claim, and the
input's size is read off its GET (``MemoryS3.requests`` counts the calls; the conversion is real, by the offline
server over HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.api.client import StsClient
from pipeline.api.limiter import Limiter
from pipeline.config import Settings
from pipeline.conversion.context import WorkerContext
from pipeline.conversion.job import run_job
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from pipeline.offline.voices import VOICES
from pipeline.run.message import JobMessage
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.memory import memory_storage
from pipeline.storage.records import failure_uri, provenance_uri

#: a successful job's S3 requests once its worker has seen the output bucket: the commit check, the foreign-object
#: check and the check before the upload (HEAD), the input (GET), the output and its record (PUT), and the removal
#: of a failure record an earlier run may have left (DELETE)
ONE_JOB = {"HeadObject": 3, "GetObject": 1, "PutObject": 2, "DeleteObject": 1}


@pytest.fixture
def worker(offline_sts: LocalStack, redis_client: redis.Redis, tmp_path: Path) -> Iterator[WorkerContext]:
    settings = Settings(STS_API_KEY=offline_sts.api_key, api_base_url=offline_sts.sts_url)
    storage = memory_storage("jobs-in", "jobs-out")
    clip = write_speech_like(tmp_path / "clip.wav", 1.5, seed=3)
    for n in range(3):
        storage.put_bytes(S3Uri("jobs-in", f"{n}.wav"), clip.read_bytes())
    client = StsClient(settings.api_base_url, settings.api_key_value() or "")
    yield WorkerContext(settings=settings, client=client, limiter=Limiter.from_settings(settings, redis_client),
                        storage=storage, redis=redis_client)
    client.close()


def _message(n: int) -> JobMessage:
    output = f"s3://jobs-out/{n}.pcm"
    line = {"input": f"s3://jobs-in/{n}.wav", "voice_id": next(iter(VOICES)), "output": output,
            "output_format": "pcm_16000"}
    return JobMessage(run_id="run-requests", shard="m.jsonl", line=n + 1, job_id=f"job-requests-{n}", output=output,
                      job=line, queued_at=time.time())


def _requests_of(worker: WorkerContext, message: JobMessage) -> dict[str, int]:
    before = dict(worker.storage.client.requests)
    state = run_job(worker.for_job(message))
    assert state is JobState.SUCCEEDED, worker.storage.get_json(failure_uri(S3Uri.parse(message.output)))
    after = worker.storage.client.requests
    return {op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)}


def test_a_job_costs_seven_s3_requests_and_its_workers_first_a_bucket_check_more(worker: WorkerContext) -> None:
    assert _requests_of(worker, _message(0)) == {**ONE_JOB, "HeadBucket": 1}
    assert _requests_of(worker, _message(1)) == ONE_JOB
    assert _requests_of(worker, _message(2)) == ONE_JOB
    assert all(worker.storage.head(provenance_uri(S3Uri("jobs-out", f"{n}.pcm"))) for n in range(3))


def test_a_committed_job_delivered_again_costs_a_head_and_a_list(worker: WorkerContext) -> None:
    message = _message(0)
    _requests_of(worker, message)
    # the commit check, and the listing of segment checkpoints a worker may have left behind the commit
    assert _requests_of(worker, message) == {"HeadObject": 1, "ListObjectsV2": 1}
