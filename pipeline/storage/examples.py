"""Complete, valid records for tests and benchmarks (in the spirit of lhotse's ``testing/dummies``).

They are built through the same types the worker writes, so a test or a synthetic benchmark run cannot drift from
what a real record holds. Every figure can be overridden; the defaults describe a 3-second clip converted once.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import Deferred, PipelineError
from pipeline.storage.records import Cost, FailureRecord, JobIdentity, ProvenanceRecord

__all__ = ["example_failure", "example_identity", "example_provenance"]

_WORKER = {"host": "h", "pid": 1, "package_version": "0.1.0", "celery_task_id": "t", "unclean_deliveries_before": 0}


def example_identity(*, job_id: str = "job-1", run_id: str = "run-1", shard: str = "a.jsonl", line: int = 1,
                     input_uri: str = "s3://in-bucket/a/1.wav", output_uri: str = "s3://out-bucket/a/1.mp3",
                     manifest_id: str | None = None, metadata: dict[str, Any] | None = None) -> JobIdentity:
    return JobIdentity(job_id=job_id, run_id=run_id, shard=shard, line=line, manifest_id=manifest_id,
                       metadata=metadata, input_uri=input_uri, output_uri=output_uri)


def example_provenance(identity: JobIdentity, *, credits: float = 50.0, duration_s: float = 3.0,
                       quality: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                       request_id: str = "req-ok", queued_at: str = "2025-03-01T10:00:00+00:00",
                       started_at: str = "2025-03-01T10:00:01+00:00",
                       finished_at: str = "2025-03-01T10:00:30+00:00", attempts: list[dict[str, Any]] | None = None,
                       output_format: str = "mp3_44100_128", output_sha256: str = "b" * 64,
                       worker: dict[str, Any] | None = None) -> ProvenanceRecord:
    attempts = attempts if attempts is not None else [
        {"n": 1, "started_at": started_at, "segment": None, "status": 200, "outcome": "ok", "request_id": request_id,
         "message": None, "duration_s": 2.0, "wait_before_s": 0.0, "bytes": 48000, "credits": credits}]
    return ProvenanceRecord(
        identity=identity,
        input={"etag": "e", "size_bytes": 96044, "sha256": "a" * 64, "duration_s": duration_s, "codec": "pcm_s16le",
               "sample_rate": 16000, "channels": 1, "format_name": "wav"},
        request={"endpoint": "/v1/speech-to-speech/{voice_id}/stream", "api_base_url": "http://127.0.0.1:1",
                 "params": params or {}, "prepared": {"file_format": "other", "size_bytes": 96044}},
        output={"size_bytes": 48000, "sha256": output_sha256, "duration_s": duration_s, "content_type": "audio/mpeg",
                "output_format": output_format},
        quality=quality or {}, attempts=attempts,
        request_ids=[a["request_id"] for a in attempts if a.get("request_id")],
        cost=Cost(credits=credits, requests=len(attempts)),
        timings={"queued_at": queued_at, "started_at": started_at, "finished_at": finished_at, "queue_wait_s": 1.0,
                 "download_s": 0.1, "prepare_s": 0.1, "convert_s": 2.0, "upload_s": 0.1, "total_s": 2.5},
        worker=worker or dict(_WORKER))


def example_failure(identity: JobIdentity, error: PipelineError, *, credits: float = 0.0,
                    at: str = "2025-03-01T10:01:10+00:00", attempts: list[dict[str, Any]] | None = None,
                    worker: dict[str, Any] | None = None) -> FailureRecord:
    """A failure record as the worker builds it; a deferred job made no request unless ``attempts`` says so."""
    if attempts is None:
        attempts = [] if isinstance(error, Deferred) else [
            {"n": 1, "status": error.status, "request_id": error.request_id, "credits": credits}]
    return FailureRecord(identity=identity, state=error.final_state, error=error.to_record(), at=at,
                         worker=worker or dict(_WORKER), attempts=attempts,
                         request_ids=[a["request_id"] for a in attempts if a.get("request_id")],
                         cost=Cost(credits=credits, requests=len(attempts)))
