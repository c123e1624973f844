"""The worker's job, start to finish: download, check, prepare, convert (whole or in segments), upload, commit.

The task message (``JobMessage``) holds the job and where it came from, never a secret. The outcome is durable in S3
(see ``pipeline.storage.records``); Redis only mirrors it for ``status``.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from pipeline import __version__
from pipeline.conversion.calls import AttemptRecord, CallContext, Conversion, convert_with_retries
from pipeline.audio.prepare import content_type_of, prepare
from pipeline.audio.probe import AudioInfo, check_limits, probe
from pipeline.errors import (
    AuthError,
    DeliveryLimitError,
    InputError,
    PipelineError,
    SlotUnavailableError,
    StorageUnavailableError,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job
from pipeline.conversion.longform import convert_segmented, delete_work
from pipeline.storage.records import build_failure, commit, failure_status, is_committed, record_failure
from pipeline.run.state import DeliveryGuard, JobState, RunState, best_effort
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage, sha256_file

log = logging.getLogger(__name__)

#: how long a worker keeps trying to upload and commit audio it has paid for before giving the job back to the queue
PAID_OUTPUT_PATIENCE_S = 120.0
#: the Celery task name of one job (workers/tasks.py registers it; the loader sends to it)
TASK_CONVERT = "sts.convert"


@dataclass(frozen=True)
class JobMessage:
    """What a task message carries: the job, its place in the manifest, and its run."""

    run_id: str
    shard: str
    line: int
    job_id: str
    output: str
    job: dict[str, Any]
    queued_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "shard": self.shard, "line": self.line, "job_id": self.job_id,
                "output": self.output, "job": self.job, "queued_at": self.queued_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobMessage:
        return cls(**{name: data[name] for name in
                      ("run_id", "shard", "line", "job_id", "output", "job", "queued_at")})


@dataclass
class WorkerContext:
    """Everything a worker process builds once and reuses for every job."""

    calls: CallContext
    storage: Storage
    redis: Any
    task_id: str | None = None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _identity(message: JobMessage, job: Job) -> dict[str, Any]:
    return {"job_id": message.job_id, "run_id": message.run_id, "shard": message.shard, "line": message.line,
            "manifest_id": job.id, "metadata": job.metadata, "input": {"uri": job.input},
            "output": {"uri": message.output}}


def _worker_record(ctx: WorkerContext, deliveries: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "package_version": __version__,
            "celery_task_id": ctx.task_id, "unclean_deliveries_before": deliveries - 1}


def run_job(ctx: WorkerContext, message: JobMessage) -> JobState:
    """Run one job to a terminal state.

    Raises ``SlotUnavailableError`` (no limiter slot in time) or ``StorageUnavailableError`` (S3 did not answer) when
    the job should go back to the queue undecided.
    """
    settings = ctx.calls.settings
    job = Job.model_validate(message.job)
    output = S3Uri.parse(message.output)
    run_state = RunState(ctx.redis, message.run_id)
    if is_committed(ctx.storage, output):
        run_state.mark(message.job_id, JobState.SUCCEEDED)
        return JobState.SUCCEEDED
    guard = DeliveryGuard(ctx.redis, message.job_id)
    deliveries = guard.begin()
    attempts: list[AttemptRecord] = []
    try:
        try:
            if deliveries > settings.max_deliveries:
                raise DeliveryLimitError(
                    f"the job was delivered {deliveries} times and its worker never finished (killed or out of "
                    f"memory); it was failed to stop a redelivery loop (STS_MAX_DELIVERIES={settings.max_deliveries})")
            run_state.mark(message.job_id, JobState.RUNNING)
            if halted := run_state.halted():  # e.g. the key was refused: every job would fail the same way
                raise AuthError(f"the run was stopped before this job started: {halted}", status=401)
            state = _convert(ctx, message, job, output, attempts, deliveries)
        except (SlotUnavailableError, StorageUnavailableError):
            run_state.mark(message.job_id, JobState.QUEUED)
            raise  # the task goes back to the queue; nothing was decided about the job
        except PipelineError as error:
            state = _fail(ctx, message, job, output, error, attempts, deliveries)
    finally:
        best_effort(guard.end)
    best_effort(run_state.mark, message.job_id, state)
    return state



def _fail(ctx: WorkerContext, message: JobMessage, job: Job, output: S3Uri, error: PipelineError,
          attempts: list[AttemptRecord], deliveries: int) -> JobState:
    record = build_failure(error=error, base={
        **_identity(message, job),
        "attempts": [a.to_dict() for a in attempts],
        "request_ids": [a.request_id for a in attempts if a.request_id],
        "cost": {"credits": sum(a.credits for a in attempts), "requests": len(attempts)},
        "at": datetime.now(timezone.utc).isoformat(),
        "worker": _worker_record(ctx, deliveries),
    })
    if _allowed(ctx.calls.settings.allowed_output_buckets, output):  # never write where outputs may not go
        try:
            record_failure(ctx.storage, output, record)
        except InputError as unwritable:  # the output bucket is missing or refuses us: the record has no home
            log.error("job %s (%s:%d): no failure record written: %s", message.job_id, message.shard, message.line,
                      unwritable.message)
    log.warning("job %s (%s:%d) %s: %s", message.job_id, message.shard, message.line, record["status"],
                error.message)
    return {"rejected": JobState.REJECTED, "deferred": JobState.DEFERRED}.get(failure_status(error),
                                                                             JobState.FAILED)


def _allowed(allowed_buckets: list[str], uri: S3Uri) -> bool:
    return not allowed_buckets or uri.bucket in allowed_buckets


def _check_buckets(settings_allowed: list[str], uri: S3Uri, role: str) -> None:
    if not _allowed(settings_allowed, uri):
        raise InputError(f"{role} bucket {uri.bucket!r} is not in STS_ALLOWED_{role.upper()}_BUCKETS "
                         f"({', '.join(settings_allowed)})", reason=f"{role}_bucket_not_allowed")


def _convert(ctx: WorkerContext, message: JobMessage, job: Job, output: S3Uri, attempts: list[AttemptRecord],
             deliveries: int) -> JobState:
    settings = ctx.calls.settings
    timings: dict[str, float] = {}
    started = time.time()
    source = S3Uri.parse(job.input)
    _check_buckets(settings.allowed_input_buckets, source, "input")
    _check_buckets(settings.allowed_output_buckets, output, "output")
    if not ctx.storage.bucket_exists(output.bucket):
        raise InputError(f"output bucket {output.bucket!r} does not exist: create it or fix the manifest's output",
                         reason="missing_output_bucket")
    head = ctx.storage.require(source, role="input")
    if head.size_bytes > settings.max_input_bytes:
        raise InputError(f"input {source} is {head.size_bytes} bytes, over STS_MAX_INPUT_BYTES="
                         f"{settings.max_input_bytes}", reason="too_large")
    with tempfile.TemporaryDirectory(prefix=f"sts-{message.job_id}-") as tmp:
        workdir = Path(tmp)
        raw = workdir / ("input" + Path(source.key).suffix.lower()[:8])
        mark = time.monotonic()
        downloaded, input_sha = ctx.storage.download(source, raw)
        timings["download_s"] = time.monotonic() - mark
        mark = time.monotonic()
        info = probe(raw, file_format=_stored_format(source), label=str(source))
        check_limits(info, max_bytes=settings.max_input_bytes, max_seconds=settings.max_input_seconds,
                     label=str(source))
        prepared = prepare(raw, info, job.file_format, workdir, label=str(source))
        timings["prepare_s"] = time.monotonic() - mark
        converted = workdir / f"output.{OUTPUT_FORMATS[job.output_format].extension}"
        mark = time.monotonic()
        max_segment_s = job.max_segment_seconds or settings.max_segment_seconds
        segments_record: list[dict[str, Any]] | None = None
        if info.duration_s > max_segment_s:
            longform = convert_segmented(ctx, job, prepared, converted, info=info, output=output,
                                         max_segment_s=max_segment_s, attempts=attempts)
            conversion: Conversion = longform.conversion
            segments_record = longform.segments
        else:
            conversion = convert_with_retries(ctx.calls, job, prepared, converted, input_s=info.duration_s,
                                              audio_content_type=content_type_of(prepared), attempts=attempts)
        timings["convert_s"] = time.monotonic() - mark
        output_format = OUTPUT_FORMATS[job.output_format]
        output_sha = sha256_file(converted)

        def publish() -> None:
            if is_committed(ctx.storage, output):
                return  # another delivery finished while this one converted; keep its output
            mark = time.monotonic()
            ctx.storage.upload_file(converted, output, content_type=output_format.content_type, sha256=output_sha)
            timings["upload_s"] = time.monotonic() - mark
            finished = time.time()
            record = {
                **_identity(message, job),
                "input": _input_record(source, downloaded.etag, downloaded.size_bytes, input_sha, info),
                "request": {"endpoint": "/v1/speech-to-speech/{voice_id}/stream",
                            "api_base_url": settings.api_base_url, "params": job.request_params(),
                            "prepared": {"file_format": job.file_format, "size_bytes": prepared.stat().st_size}},
                "attempts": [a.to_dict() for a in attempts],
                "request_ids": [a.request_id for a in attempts if a.request_id],
                "segments": segments_record,
                "output": {"uri": str(output), "size_bytes": converted.stat().st_size, "sha256": output_sha,
                           "duration_s": conversion.quality.duration_out_s,
                           "content_type": output_format.content_type, "output_format": job.output_format},
                "quality": conversion.quality.to_dict(),
                "cost": {"credits": sum(a.credits for a in attempts), "requests": len(attempts)},
                "timings": {"queued_at": _iso(message.queued_at), "started_at": _iso(started),
                            "finished_at": _iso(finished), "queue_wait_s": round(started - message.queued_at, 3),
                            **{k: round(v, 3) for k, v in timings.items()},
                            "total_s": round(finished - started, 3)},
                "worker": _worker_record(ctx, deliveries),
            }
            commit(ctx.storage, output, record)

        _patiently(publish, PAID_OUTPUT_PATIENCE_S)
    if segments_record is not None:
        delete_work(ctx, output)
    return JobState.SUCCEEDED


def _patiently(action: Callable[[], None], patience_s: float) -> None:
    """Run ``action``, retrying while S3 is unavailable for up to ``patience_s`` (backoff 1 s doubling to 15 s).

    Used once the audio is paid for: re-queueing then would convert, and pay, again.
    """
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


def _input_record(uri: S3Uri, etag: str, size: int, sha256: str, info: AudioInfo) -> dict[str, Any]:
    return {"uri": str(uri), "etag": etag, "size_bytes": size, "sha256": sha256, "duration_s": info.duration_s,
            "codec": info.codec, "sample_rate": info.sample_rate, "channels": info.channels,
            "format_name": info.format_name}


def _stored_format(uri: S3Uri) -> str:
    """Raw PCM inputs (``.pcm``/``.raw``) are 16 kHz mono s16le, the API's ``pcm_s16le_16``; the rest ffmpeg reads."""
    return "pcm_s16le_16" if uri.key.lower().endswith((".pcm", ".raw")) else "other"


