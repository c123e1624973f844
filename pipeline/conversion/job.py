"""The worker's job, start to finish: check, claim, download, probe, prepare, convert (whole or in segments),
measure, upload, commit.

The outcome is durable in S3 (see ``pipeline.storage.records``); Redis only mirrors it for ``status``. Whatever a
response or an object holds, a job ends in a terminal record or goes back to the queue undecided: an exception that is
not one of the pipeline's own errors (a bug, a value nobody expected) fails the job as ``internal_error`` with a
record, instead of leaving it ``running`` with none (a retry would then pay again).

Before anything is spent the worker checks, again, what ``validate`` checked about the output key
(``pipeline.manifest.keys``), and that the output is not an object someone else wrote (``output_exists``, unless the
line or run says ``overwrite``). One delivery converts a job at a time (``pipeline.conversion.claim``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline._redis import best_effort
from pipeline.audio.container import wants_wav, wrap_wav
from pipeline.audio.master import master, target_for, with_mastering
from pipeline.audio.prepare import content_type_of, prepare
from pipeline.audio.probe import check_limits, probe
from pipeline.audio.quality import measure
from pipeline.audio.tags import copy_tags
from pipeline.conversion.calls import AttemptRecord, convert_with_retries, expected_output_s
from pipeline.conversion.claim import JobClaim, JobClaimed
from pipeline.conversion.context import JobContext
from pipeline.conversion.guard import DeliveryGuard
from pipeline.conversion.longform import convert_segmented, delete_work
from pipeline.conversion.publish import Made, cost_of, identity_of, provenance, publish, worker_record
from pipeline.errors import (
    AuthError,
    DeliveryLimitError,
    InputError,
    PermanentError,
    PipelineError,
    RunCancelled,
    SlotUnavailableError,
    StorageUnavailableError,
    redact,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job
from pipeline.manifest.keys import output_key_problems
from pipeline.ops import metrics, tracing
from pipeline.reasons import Reason
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.records import FailureRecord, is_committed, record_failure
from pipeline.storage.s3 import ObjectInfo, sha256_file
from pipeline.text import printable

log = logging.getLogger(__name__)

__all__ = ["InternalError", "run_job"]

#: the longest summary of an unexpected exception a failure record keeps
_SUMMARY_CHARS = 300


class InternalError(PermanentError):
    """An exception that is not one of the pipeline's own ended the job: a bug, or a value nobody expected."""

    reason = Reason.INTERNAL_ERROR.value

    @classmethod
    def of(cls, error: BaseException) -> InternalError:
        """The error for a failure record: the exception's type and a redacted, printable summary, no traceback."""
        summary = printable(redact(str(error)))
        if len(summary) > _SUMMARY_CHARS:
            summary = summary[:_SUMMARY_CHARS] + "..."
        return cls(f"internal error {type(error).__name__}" + (f": {summary}" if summary else "") +
                   "; the job was stopped (the worker log has the traceback): report it, then retry the job")


def run_job(ctx: JobContext) -> JobState:
    """Run one job to a terminal state.

    Raises ``SlotUnavailableError`` (no limiter slot in time), ``StorageUnavailableError`` (S3 did not answer) or
    ``JobClaimed`` (another delivery converts the job right now) when the job should go back to the queue undecided.
    """
    with tracing.job_span(ctx.message) as span:
        state = _run_job(ctx)
        span.set("sts.job.state", state.value)
    return state


def _run_job(ctx: JobContext) -> JobState:
    message = ctx.message
    try:
        job = Job.model_validate(message.job)
        output = S3Uri.parse(message.output)
    except Exception as error:  # a message no submit of this version writes: nothing to convert, nowhere to record
        log.error("job %s (%s:%s): the task message cannot be read (%s); dropped without a record",
                  message.job_id, message.shard, message.line, InternalError.of(error).message)
        best_effort(ctx.run_state.mark, message.job_id, JobState.FAILED)
        return JobState.FAILED
    try:
        return _claimed(ctx, job, output)
    except (SlotUnavailableError, StorageUnavailableError, JobClaimed):
        raise
    except Exception as error:  # the commit check or the claim failed oddly; nothing was spent
        log.exception("job %s: stopped before it started", message.job_id)
        failure = error if isinstance(error, PipelineError) else InternalError.of(error)
        state = _fail(ctx, job, output, failure, [], 1)
        best_effort(ctx.run_state.mark, message.job_id, state)
        return state


def _claimed(ctx: JobContext, job: Job, output: S3Uri) -> JobState:
    """Claim the job (so no other delivery spends on it meanwhile), skip it if it is committed, else run it.

    The claim (one Redis SET) comes before the commit check (one S3 HEAD), so a job costs one HEAD for it, not two.
    """
    message = ctx.message
    claim = JobClaim(ctx.redis, message.job_id, ttl_s=ctx.settings.claim_ttl)
    if not claim.acquire(ctx.settings.claim_wait_s):
        if is_committed(ctx.storage, output):  # the delivery that holds the claim has just finished the job
            best_effort(ctx.run_state.mark, message.job_id, JobState.SUCCEEDED)
            return JobState.SUCCEEDED
        best_effort(ctx.run_state.mark, message.job_id, JobState.QUEUED)
        raise JobClaimed(f"job {message.job_id} is being converted by another delivery (it holds {claim.key} "
                         f"for more than STS_CLAIM_WAIT_S={ctx.settings.claim_wait_s:g} s); back to the queue")
    try:
        if is_committed(ctx.storage, output):  # a redelivery, or a re-submit of a finished job
            _leftover_work(ctx, output)
            ctx.run_state.mark(message.job_id, JobState.SUCCEEDED)
            return JobState.SUCCEEDED
        return _run(ctx, job, output)
    finally:
        best_effort(claim.release)


def _run(ctx: JobContext, job: Job, output: S3Uri) -> JobState:
    message = ctx.message
    guard = DeliveryGuard(ctx.redis, message.job_id)
    deliveries = guard.begin()
    metrics.job_started(message.queued_at)
    attempts: list[AttemptRecord] = []
    try:
        try:
            if deliveries > ctx.settings.max_deliveries:
                raise DeliveryLimitError(
                    f"the job was delivered {deliveries} times and its worker never finished (killed or out of "
                    f"memory); it was failed to stop a redelivery loop "
                    f"(STS_MAX_DELIVERIES={ctx.settings.max_deliveries})")
            ctx.run_state.mark(message.job_id, JobState.RUNNING)
            if halted := ctx.run_state.halted():  # e.g. the key was refused: every job would fail the same way
                raise AuthError(f"the run was stopped before this job started: {halted}", status=401)
            if ctx.run_state.cancelled():  # queued jobs of a cancelled run end without downloading anything
                raise RunCancelled("the run was cancelled (sts-pipeline cancel) before this job started")
            state = _convert(ctx, job, output, attempts, deliveries)
        except (SlotUnavailableError, StorageUnavailableError):
            ctx.run_state.mark(message.job_id, JobState.QUEUED)
            raise  # the task goes back to the queue; nothing was decided about the job
        except PipelineError as error:
            state = _fail(ctx, job, output, error, attempts, deliveries)
        except Exception as error:  # not ours: a bug or an odd value; the job still ends with a record
            log.exception("job %s (%s:%d): unexpected %s", message.job_id, message.shard, message.line,
                          type(error).__name__)
            state = _fail(ctx, job, output, InternalError.of(error), attempts, deliveries)
    finally:
        best_effort(guard.end)
    best_effort(ctx.run_state.mark, message.job_id, state)
    return state


def _leftover_work(ctx: JobContext, output: S3Uri) -> None:
    """Remove segment checkpoints a worker left when it died between the commit and their cleanup (one LIST)."""
    try:
        delete_work(ctx.storage, output)
    except PipelineError as error:
        log.warning("job %s: leftover checkpoints not removed: %s", ctx.message.job_id, error.message)


def _fail(ctx: JobContext, job: Job, output: S3Uri, error: PipelineError, attempts: list[AttemptRecord],
          deliveries: int) -> JobState:
    message = ctx.message
    record = FailureRecord(
        identity=identity_of(message, job), state=error.final_state, error=error.to_record(),
        at=datetime.now(UTC).isoformat(), worker=worker_record(ctx.task_id, deliveries),
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
    metrics.job_finished(record.state.value, error.reason)
    tracing.job_reason(error.reason)
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
    for problem in output_key_problems(output, runs_uri=settings.runs_uri):
        raise InputError(f"output {output} {problem.message}", reason=problem.reason)
    _check_buckets(ctx, source, output)
    _check_not_foreign(ctx, job, output)
    with tempfile.TemporaryDirectory(prefix=f"sts-{ctx.message.job_id}-") as tmp:
        made = _make(ctx, job, output, source, Path(tmp), attempts, started)
        output_sha = sha256_file(made.converted)
        worker = worker_record(ctx.task_id, deliveries)
        publish(ctx.storage, output, output_sha, made,
                lambda: provenance(ctx.message, job, made, api_base_url=settings.api_base_url,
                                   output_sha=output_sha, worker=worker))
    if made.segments is not None:
        delete_work(ctx.storage, output)
    metrics.job_finished(JobState.SUCCEEDED.value)
    return JobState.SUCCEEDED


def _check_not_foreign(ctx: JobContext, job: Job, output: S3Uri) -> None:
    """Refuse to overwrite an object at the output that this pipeline did not write, unless told to."""
    existing = ctx.storage.head(output)
    if existing is None or job.overwrite or _written_by_us(existing):
        return
    raise InputError(
        f"output {output} already exists and was not written by this pipeline (no provenance record beside it, no "
        f"pipeline metadata on it), so it was left as it is and nothing was spent; to replace it add "
        f"\"overwrite\": true to the manifest line (or submit the run with --overwrite), or choose another output",
        reason=Reason.OUTPUT_EXISTS.value)


def _written_by_us(info: ObjectInfo) -> bool:
    """Our uploads carry their content hash as user metadata (``pipeline.storage.s3.SHA256_META``): an output a
    crashed delivery uploaded but never committed is ours to replace."""
    return info.sha256 is not None


def _make(ctx: JobContext, job: Job, output: S3Uri, source: S3Uri, workdir: Path, attempts: list[AttemptRecord],
          started: float) -> Made:
    """Download, probe, prepare and convert the input into a local output file; measure it once."""
    settings = ctx.settings
    timings: dict[str, float] = {}
    raw = workdir / ("input" + Path(source.key).suffix.lower()[:8])
    mark = time.monotonic()
    downloaded, input_sha = ctx.storage.download(source, raw, max_bytes=settings.max_input_bytes)
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
    segmented = None
    if info.duration_s > max_segment_s:  # measured as it is stitched, unless mastering makes another output
        segmented = convert_segmented(ctx, job, prepared, converted, info=info, output=output,
                                      max_segment_s=max_segment_s, attempts=attempts, measure=not job.master)
    else:
        convert_with_retries(ctx.calls, job, prepared, converted, input_s=info.duration_s,
                             audio_content_type=content_type_of(prepared), attempts=attempts)
    timings["convert_s"] = time.monotonic() - mark
    mastering = master(converted, output_format, target_for(job.master), workdir) if job.master else None
    if job.copy_tags:  # before measure and publish: the sha256 in provenance is the tagged file's
        speed = (job.voice_settings.speed if job.voice_settings else None) or 1.0
        copy_tags(raw, converted, codec=output_format.codec, speed=speed)
    quality = segmented.quality if segmented is not None and segmented.quality is not None else \
        measure(converted, output_format=output_format, input_duration_s=expected_output_s(job, info.duration_s))
    container = None
    if wants_wav(output.key, output_format):  # the API's headerless samples, stored so that players open them
        converted, container = wrap_wav(converted, workdir / "output.wav", output_format), "wav"
    return Made(source=downloaded, input_sha256=input_sha, info=info, prepared=prepared, converted=converted,
                output_format=output_format, quality=with_mastering(quality.to_dict(), mastering),
                duration_out_s=quality.duration_out_s, attempts=attempts,
                segments=segmented.records if segmented is not None else None, started=started, timings=timings,
                container=container)


def _stored_format(uri: S3Uri) -> str:
    """Raw PCM inputs (``.pcm``/``.raw``) are 16 kHz mono s16le, the API's ``pcm_s16le_16``; the rest ffmpeg reads."""
    return "pcm_s16le_16" if uri.key.lower().endswith((".pcm", ".raw")) else "other"
