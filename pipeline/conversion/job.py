"""The worker's job, start to finish: check, download, probe, prepare, convert (whole or in segments), measure,
upload, commit.

The outcome is durable in S3 (see ``pipeline.storage.records``); Redis only mirrors it for ``status``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pipeline.audio.prepare import content_type_of, prepare
from pipeline.audio.probe import check_limits, probe
from pipeline.audio.quality import measure
from pipeline.conversion.calls import AttemptRecord, convert_with_retries, expected_output_s
from pipeline.conversion.context import JobContext
from pipeline.conversion.guard import DeliveryGuard
from pipeline.conversion.longform import convert_segmented, delete_work
from pipeline.conversion.publish import Made, cost_of, identity_of, provenance, publish, worker_record
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
from pipeline.s3uri import S3Uri
from pipeline._redis import best_effort
from pipeline.states import JobState
from pipeline.storage.records import FailureRecord, is_committed, record_failure
from pipeline.storage.s3 import sha256_file

log = logging.getLogger(__name__)

__all__ = ["run_job"]


def run_job(ctx: JobContext) -> JobState:
    """Run one job to a terminal state.

    Raises ``SlotUnavailableError`` (no limiter slot in time) or ``StorageUnavailableError`` (S3 did not answer) when
    the job should go back to the queue undecided.
    """
    message = ctx.message
    job = Job.model_validate(message.job)
    output = S3Uri.parse(message.output)
    if is_committed(ctx.storage, output):
        ctx.run_state.mark(message.job_id, JobState.SUCCEEDED)
        return JobState.SUCCEEDED
    guard = DeliveryGuard(ctx.redis, message.job_id)
    deliveries = guard.begin()
    attempts: list[AttemptRecord] = []
    try:
        try:
            if deliveries > ctx.settings.max_deliveries:
                raise DeliveryLimitError(
                    f"the job was delivered {deliveries} times and its worker never finished (killed or out of "
                    f"memory); it was failed to stop a redelivery loop (STS_MAX_DELIVERIES={ctx.settings.max_deliveries})")
            ctx.run_state.mark(message.job_id, JobState.RUNNING)
            if halted := ctx.run_state.halted():  # e.g. the key was refused: every job would fail the same way
                raise AuthError(f"the run was stopped before this job started: {halted}", status=401)
            state = _convert(ctx, job, output, attempts, deliveries)
        except (SlotUnavailableError, StorageUnavailableError):
            ctx.run_state.mark(message.job_id, JobState.QUEUED)
            raise  # the task goes back to the queue; nothing was decided about the job
        except PipelineError as error:
            state = _fail(ctx, job, output, error, attempts, deliveries)
    finally:
        best_effort(guard.end)
    best_effort(ctx.run_state.mark, message.job_id, state)
    return state


def _fail(ctx: JobContext, job: Job, output: S3Uri, error: PipelineError, attempts: list[AttemptRecord],
          deliveries: int) -> JobState:
    message = ctx.message
    record = FailureRecord(
        identity=identity_of(message, job), state=error.final_state, error=error.to_record(),
        at=datetime.now(timezone.utc).isoformat(), worker=worker_record(ctx.task_id, deliveries),
        attempts=[a.to_dict() for a in attempts], request_ids=[a.request_id for a in attempts if a.request_id],
        cost=cost_of(attempts))
    if _allowed(ctx.settings.allowed_output_buckets, output):  # never write where outputs may not go
        try:
            record_failure(ctx.storage, output, record)
        except InputError as unwritable:  # the output bucket is missing or refuses us: the record has no home
            log.error("job %s (%s:%d): no failure record written: %s", message.job_id, message.shard, message.line,
                      unwritable.message)
    log.warning("job %s (%s:%d) %s: %s", message.job_id, message.shard, message.line, record.state.value,
                error.message)
    return record.state


def _allowed(allowed_buckets: list[str], uri: S3Uri) -> bool:
    return not allowed_buckets or uri.bucket in allowed_buckets


def _check_buckets(ctx: JobContext, source: S3Uri, output: S3Uri) -> None:
    for uri, role, allowed in ((source, "input", ctx.settings.allowed_input_buckets),
                               (output, "output", ctx.settings.allowed_output_buckets)):
        if not _allowed(allowed, uri):
            raise InputError(f"{role} bucket {uri.bucket!r} is not in STS_ALLOWED_{role.upper()}_BUCKETS "
                             f"({', '.join(allowed)})", reason=f"{role}_bucket_not_allowed")
    if not ctx.storage.bucket_exists(output.bucket):
        raise InputError(f"output bucket {output.bucket!r} does not exist: create it or fix the manifest's output",
                         reason="missing_output_bucket")


def _convert(ctx: JobContext, job: Job, output: S3Uri, attempts: list[AttemptRecord], deliveries: int) -> JobState:
    settings = ctx.settings
    started = time.time()
    source = S3Uri.parse(job.input)
    _check_buckets(ctx, source, output)
    head = ctx.storage.require(source, role="input")
    if head.size_bytes > settings.max_input_bytes:
        raise InputError(f"input {source} is {head.size_bytes} bytes, over STS_MAX_INPUT_BYTES="
                         f"{settings.max_input_bytes}", reason="too_large")
    with tempfile.TemporaryDirectory(prefix=f"sts-{ctx.message.job_id}-") as tmp:
        made = _make(ctx, job, output, source, Path(tmp), attempts, started)
        output_sha = sha256_file(made.converted)
        worker = worker_record(ctx.task_id, deliveries)
        publish(ctx.storage, output, output_sha, made,
                lambda: provenance(ctx.message, job, made, api_base_url=settings.api_base_url,
                                   output_sha=output_sha, worker=worker))
    if made.segments is not None:
        delete_work(ctx.storage, output)
    return JobState.SUCCEEDED


def _make(ctx: JobContext, job: Job, output: S3Uri, source: S3Uri, workdir: Path, attempts: list[AttemptRecord],
          started: float) -> Made:
    """Download, probe, prepare and convert the input into a local output file; measure it once."""
    settings = ctx.settings
    timings: dict[str, float] = {}
    raw = workdir / ("input" + Path(source.key).suffix.lower()[:8])
    mark = time.monotonic()
    downloaded, input_sha = ctx.storage.download(source, raw)
    timings["download_s"] = time.monotonic() - mark
    mark = time.monotonic()
    info = probe(raw, file_format=_stored_format(source), label=str(source))
    check_limits(info, max_bytes=settings.max_input_bytes, max_seconds=settings.max_input_seconds, label=str(source))
    prepared = prepare(raw, info, job.file_format, workdir, label=str(source))
    timings["prepare_s"] = time.monotonic() - mark
    output_format = OUTPUT_FORMATS[job.output_format]
    converted = workdir / f"output.{output_format.extension}"
    mark = time.monotonic()
    max_segment_s = job.max_segment_seconds or settings.max_segment_seconds
    segments = None
    if info.duration_s > max_segment_s:
        segments = convert_segmented(ctx, job, prepared, converted, info=info, output=output,
                                     max_segment_s=max_segment_s, attempts=attempts)
    else:
        convert_with_retries(ctx.calls, job, prepared, converted, input_s=info.duration_s,
                             audio_content_type=content_type_of(prepared), attempts=attempts)
    timings["convert_s"] = time.monotonic() - mark
    quality = measure(converted, output_format=output_format, input_duration_s=expected_output_s(job, info.duration_s))
    return Made(source=downloaded, input_sha256=input_sha, info=info, prepared=prepared, converted=converted,
                output_format=output_format, quality=quality.to_dict(), duration_out_s=quality.duration_out_s,
                attempts=attempts, segments=segments, started=started, timings=timings)


def _stored_format(uri: S3Uri) -> str:
    """Raw PCM inputs (``.pcm``/``.raw``) are 16 kHz mono s16le, the API's ``pcm_s16le_16``; the rest ffmpeg reads."""
    return "pcm_s16le_16" if uri.key.lower().endswith((".pcm", ".raw")) else "other"
