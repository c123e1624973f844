"""A synthetic finished run for the control-plane benchmark: its manifest lines and the S3 objects it left.

Job ``i`` of shard ``s`` writes ``s3://{bucket}/{prefix}/shard-{s:02d}/{i:06d}.mp3``. Its outcome is fixed by its
number: of every 100 jobs, 96 succeeded (the audio plus a provenance record built by ``pipeline.storage.examples``),
3 failed (a failure record built the same way) and 1 was rejected (a 422 failure record). So every job has
exactly one record, and the run's records number ``shards * jobs_per_shard``.

Both the seeded S3 server (``bench.seeded_s3``) and the benchmark build from this module, so what the benchmark
parses and what S3 holds agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import RejectedError, TransientError
from pipeline.storage.examples import example_failure, example_provenance
from pipeline.storage.records import FAILURE_SUFFIX, PROVENANCE_SUFFIX, JobIdentity

INPUT_BUCKET = "bench-cp-inputs"
VOICE_ID = "BKkWQENix2VWeAv6YV5R"
AUDIO_BYTES = b"ID3" + bytes(61)  # outputs only need to exist; the reconciler never reads them
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticRun:
    """``shards`` manifests of ``jobs_per_shard`` lines whose outputs live under ``s3://bucket/prefix/``."""

    bucket: str
    prefix: str
    shards: int
    jobs_per_shard: int

    @property
    def jobs(self) -> int:
        return self.shards * self.jobs_per_shard

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:02d}.jsonl"

    def output(self, shard: int, index: int) -> str:
        return f"s3://{self.bucket}/{self.prefix}/shard-{shard:02d}/{index:06d}.mp3"

    def line(self, shard: int, index: int) -> dict[str, Any]:
        return {"input": f"s3://{INPUT_BUCKET}/{self.prefix}/{shard:02d}/{index:06d}.wav", "voice_id": VOICE_ID,
                "seed": index, "output": self.output(shard, index)}

    def manifest(self, shard: int) -> bytes:
        return "".join(json.dumps(self.line(shard, i)) + "\n" for i in range(self.jobs_per_shard)).encode()

    def outcome(self, index: int) -> str:
        return {96: "failed", 97: "failed", 98: "failed", 99: "rejected"}.get(index % 100, "succeeded")

    def objects(self) -> Iterator[tuple[str, bytes]]:
        """Every (key, body) the finished run left in its bucket."""
        for shard in range(self.shards):
            for index in range(self.jobs_per_shard):
                key = self.output(shard, index).split("/", 3)[3]
                outcome = self.outcome(index)
                if outcome == "succeeded":
                    yield key, AUDIO_BYTES
                    yield key + PROVENANCE_SUFFIX, _json(_provenance(self, shard, index))
                else:
                    yield key + FAILURE_SUFFIX, _json(_failure(self, shard, index, outcome))


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def _identity(run: SyntheticRun, shard: int, index: int) -> JobIdentity:
    line = run.line(shard, index)
    return JobIdentity(job_id=hashlib.sha256(line["output"].encode()).hexdigest()[:24], run_id=run.prefix,
                       shard=run.shard_name(shard), line=index + 1, manifest_id=None, metadata=None,
                       input_uri=line["input"], output_uri=line["output"])


def _attempt(index: int, at: datetime) -> dict[str, Any]:
    return {"n": 1, "started_at": at.isoformat(), "segment": None, "status": 200, "outcome": "ok",
            "request_id": f"{index:032x}", "message": None, "duration_s": 4.5, "wait_before_s": 0.0,
            "bytes": 320_000, "credits": 334.0}


def _provenance(run: SyntheticRun, shard: int, index: int) -> dict[str, Any]:
    at = _T0 + timedelta(seconds=shard * run.jobs_per_shard + index)
    record = example_provenance(
        _identity(run, shard, index), credits=334.0, duration_s=20.0,
        params={"voice_id": VOICE_ID, "model_id": "eleven_english_sts_v2", "seed": index,
                "output_format": "mp3_44100_128"},
        quality={"duration_in_s": 20.0, "duration_out_s": 20.0, "drift_ms": 0.0, "lufs": -19.5, "peak_dbfs": -3.1,
                 "clipped_samples": 0, "leading_silence_s": 0.0, "trailing_silence_s": 0.4, "flags": []},
        queued_at=_T0.isoformat(), started_at=at.isoformat(), finished_at=(at + timedelta(seconds=5)).isoformat(),
        attempts=[_attempt(index, at)], output_sha256="2" * 64,
        worker={"host": "bench", "pid": 1, "package_version": "0.1.0", "celery_task_id": None,
                "unclean_deliveries_before": 0})
    return record.to_dict()


def _failure(run: SyntheticRun, shard: int, index: int, outcome: str) -> dict[str, Any]:
    error: TransientError | RejectedError
    if outcome == "rejected":
        error = RejectedError("the service rejected the request (422): audio: too long", detail=[
            {"type": "value_error", "loc": ["body", "audio"], "msg": "Audio is longer than 300 seconds"}])
    else:
        error = TransientError("the service answered 503 (service_unavailable)", status=503)
    at = _T0 + timedelta(seconds=shard * run.jobs_per_shard + index)
    attempts = [_attempt(index, at)] * 6
    return example_failure(_identity(run, shard, index), error, at=at.isoformat(), attempts=attempts,
                           worker={"host": "bench", "pid": 1}).to_dict()
