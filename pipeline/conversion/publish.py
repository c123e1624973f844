"""Publishing a paid output: upload the audio, then commit its provenance record, riding out short S3 outages.

Once the audio is paid for, re-queueing the job would convert, and pay, again; so S3 faults here are waited out for
``PAID_OUTPUT_PATIENCE_S`` before the job is given back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.audio.container import WAV_CONTENT_TYPE
from pipeline.audio.probe import AudioInfo
from pipeline.conversion.calls import AttemptRecord
from pipeline.errors import StorageUnavailableError
from pipeline.formats import OutputFormat
from pipeline.manifest.job import Job
from pipeline.run.message import JobMessage
from pipeline.s3uri import S3Uri
from pipeline.storage.records import Cost, JobIdentity, ProvenanceRecord, commit, is_committed
from pipeline.storage.s3 import ObjectInfo, Storage

log = logging.getLogger(__name__)

__all__ = ["PAID_OUTPUT_PATIENCE_S", "Made", "identity_of", "patiently", "publish", "worker_record"]

#: how long a worker keeps trying to upload and commit audio it has paid for before giving the job back to the queue
PAID_OUTPUT_PATIENCE_S = 120.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def identity_of(message: JobMessage, job: Job) -> JobIdentity:
    return JobIdentity(job_id=message.job_id, run_id=message.run_id, shard=message.shard, line=message.line,
                       manifest_id=job.id, metadata=job.metadata, input_uri=job.input, output_uri=message.output)


def worker_record(task_id: str | None, deliveries: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "package_version": __version__,
            "celery_task_id": task_id, "unclean_deliveries_before": deliveries - 1}


def cost_of(attempts: list[AttemptRecord]) -> Cost:
    return Cost(credits=sum(a.credits for a in attempts), requests=len(attempts))


@dataclass
class Made:
    """How a job's output was made: what the provenance record says besides the job's identity."""

    source: ObjectInfo
    input_sha256: str
    info: AudioInfo
    prepared: Path
    converted: Path
    output_format: OutputFormat
    quality: dict[str, Any]
    duration_out_s: float
    attempts: list[AttemptRecord]
    segments: list[dict[str, Any]] | None
    started: float
    timings: dict[str, float] = field(default_factory=dict)
    #: the container the API's headerless samples were stored in (``wav``), or None: stored as the API sent them
    container: str | None = None

    @property
    def content_type(self) -> str:
        return WAV_CONTENT_TYPE if self.container == "wav" else self.output_format.content_type


def _input_record(made: Made) -> dict[str, Any]:
    info = made.info
    return {"etag": made.source.etag, "size_bytes": made.source.size_bytes, "sha256": made.input_sha256,
            "duration_s": info.duration_s, "codec": info.codec, "sample_rate": info.sample_rate,
            "channels": info.channels, "format_name": info.format_name, "header_duration_s": info.header_duration_s}


def provenance(message: JobMessage, job: Job, made: Made, *, api_base_url: str, output_sha: str,
               worker: dict[str, Any]) -> ProvenanceRecord:
    finished = time.time()
    return ProvenanceRecord(
        identity=identity_of(message, job), input=_input_record(made),
        request={"endpoint": "/v1/speech-to-speech/{voice_id}/stream", "api_base_url": api_base_url,
                 "params": job.request_params(),
                 "prepared": {"file_format": job.file_format, "size_bytes": made.prepared.stat().st_size}},
        attempts=[a.to_dict() for a in made.attempts],
        request_ids=[a.request_id for a in made.attempts if a.request_id], segments=made.segments,
        output={"size_bytes": made.converted.stat().st_size, "sha256": output_sha,
                "duration_s": made.duration_out_s, "content_type": made.content_type,
                "output_format": job.output_format, "container": made.container},
        quality=made.quality, cost=cost_of(made.attempts),
        timings={"queued_at": iso(message.queued_at), "started_at": iso(made.started), "finished_at": iso(finished),
                 "queue_wait_s": round(made.started - message.queued_at, 3),
                 **{k: round(v, 3) for k, v in made.timings.items()}, "total_s": round(finished - made.started, 3)},
        worker=worker)


def publish(storage: Storage, output: S3Uri, output_sha: str, made: Made,
            record: Callable[[], ProvenanceRecord]) -> None:
    """Upload ``made.converted`` to ``output`` and commit the record, unless another delivery committed first."""
    def once() -> None:
        if is_committed(storage, output):
            return  # another delivery finished while this one converted; keep its output
        mark = time.monotonic()
        storage.upload_file(made.converted, output, content_type=made.content_type, sha256=output_sha)
        made.timings["upload_s"] = time.monotonic() - mark
        commit(storage, output, record())

    patiently(once, PAID_OUTPUT_PATIENCE_S)


def patiently(action: Callable[[], None], patience_s: float) -> None:
    """Run ``action``, retrying while S3 is unavailable for up to ``patience_s`` (backoff 1 s doubling to 15 s)."""
    deadline = time.monotonic() + patience_s
    delay_s = 1.0
    while True:
        try:
            action()
            return
        except StorageUnavailableError as error:
            if time.monotonic() + delay_s > deadline:
                raise
            log.warning("S3 unavailable after a paid conversion (%s); trying again in %.0f s", error.message, delay_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 15.0)
