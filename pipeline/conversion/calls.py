"""One conversion request with everything around the HTTP call: budget, shared limiter, retries, cut-stream detection.

Every attempt is recorded (time, status, request id, wait, cost) for provenance. Transient faults are retried with
exponential backoff and full jitter (never shorter than Retry-After) up to ``max_attempts``; a rejection is never
retried; a 401 halts the whole run.

Each attempt's output is checked for its length only (a cut stream is a transient fault); the full quality measure
runs once, on the job's final output.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline._redis import best_effort
from pipeline.api.backoff import backoff_delay_s
from pipeline.api.client import CallResult, StsClient
from pipeline.api.headers import character_cost
from pipeline.api.limiter import Limiter
from pipeline.audio.decode import output_duration_s
from pipeline.config import Settings
from pipeline.conversion import drain
from pipeline.errors import (
    AuthError,
    InputError,
    PipelineError,
    QuotaExceededError,
    RefusedByPlanError,
    ResponseInfo,
    RunCancelled,
    SlotUnavailableError,
    TransientError,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job
from pipeline.ops import metrics
from pipeline.run.budget import Budget, Reservation
from pipeline.run.quota import QuotaGate
from pipeline.run.state import RunState

log = logging.getLogger(__name__)

__all__ = ["AttemptRecord", "CallContext", "Conversion", "convert_with_retries", "expected_output_s"]

#: an output shorter than this share of the expected duration (less a fixed allowance) counts as a cut stream
SHORT_OUTPUT_RATIO = 0.97
SHORT_OUTPUT_ALLOWANCE_S = 0.25


@dataclass
class AttemptRecord:
    """One request to the service, as provenance lists it."""

    n: int
    started_at: str
    segment: int | None
    status: int | None = None
    outcome: str = "pending"  # ok | <error reason>
    request_id: str | None = None
    message: str | None = None
    duration_s: float = 0.0
    wait_before_s: float = 0.0
    bytes: int = 0
    credits: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Conversion:
    """A successful conversion: how long its output is, and the request that made it."""

    duration_out_s: float
    request_id: str | None


@dataclass
class CallContext:
    """What an attempt loop needs: the process's clients, and the run's state and budget (per job)."""

    settings: Settings
    client: StsClient
    limiter: Limiter
    run_state: RunState | None = None
    budget: Budget | None = None
    quota: QuotaGate | None = None
    rng: random.Random = field(default_factory=random.Random)


def expected_output_s(job: Job, input_s: float) -> float:
    speed = job.voice_settings.speed if job.voice_settings and job.voice_settings.speed else 1.0
    return input_s / speed


def _now() -> str:
    return datetime.now(UTC).isoformat()


def convert_with_retries(ctx: CallContext, job: Job, audio: Path, out: Path, *, input_s: float,
                         audio_content_type: str, segment: int | None = None,
                         attempts: list[AttemptRecord] | None = None) -> Conversion:
    """Convert ``audio`` into ``out``; raise the final PipelineError when attempts run out or retrying cannot help.

    ``attempts`` (if given) collects every attempt, also when the conversion fails in the end.
    """
    settings = ctx.settings
    records = attempts if attempts is not None else []
    wait_s = 0.0
    for n in range(1, settings.max_attempts + 1):
        _may_spend(ctx, job)
        record = AttemptRecord(n=n, started_at=_now(), segment=segment, wait_before_s=round(wait_s, 3))
        started = time.monotonic()
        try:
            with _reserved(ctx, input_s * settings.credits_per_second) as settle:
                result = _request(ctx, job, audio, out, audio_content_type, input_s)
                settle(result.character_cost or 0.0)
            _finish(record, started, status=200, request_id=result.request_id, credits=result.character_cost or 0.0,
                    bytes_written=result.bytes_written)
            records.append(record)
            conversion = Conversion(_checked_length(job, out, input_s, result), result.request_id)
            metrics.record_attempt(record, audio_s=input_s)
            return conversion
        except SlotUnavailableError:
            raise  # no request was made: nothing to record, the job goes back to the queue
        except PipelineError as error:
            if record.outcome == "ok":  # paid for, then found short: the attempt is recorded with its cost
                record.outcome, record.message = error.reason, error.message
            else:
                _fail_attempt(record, started, error)
                records.append(record)
            metrics.record_attempt(record, kind=getattr(error, "kind", None))
            _tell_the_run(ctx, job, error)
            if not isinstance(error, TransientError) or n == settings.max_attempts:
                raise
            wait_s = backoff_delay_s(n, base_s=settings.backoff_base_s, max_s=settings.backoff_max_s,
                                     retry_after_s=error.retry_after_s, rng=ctx.rng)
            log.info("attempt %d of job voice=%s failed (%s); retrying in %.1f s", n, job.voice_id, error.reason,
                     wait_s)
            time.sleep(wait_s)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def request_shapes(job: Job) -> dict[str, str]:
    """For each 403 code, the part of a request it refuses: a later job with the same part gets the same answer."""
    features = (f"model_id={job.model_id},remove_background_noise={job.remove_background_noise},"
                f"enable_logging={job.enable_logging},optimize_streaming_latency={job.optimize_streaming_latency}")
    return {"output_format_not_allowed": f"output_format={job.output_format}",
            "voice_access_denied": f"voice_id={job.voice_id}", "model_access_denied": f"model_id={job.model_id}",
            "feature_not_available": features}


def _may_spend(ctx: CallContext, job: Job) -> None:
    """Raise what the run already knows would happen: a halt (bad key), a cancel, a spent quota, a shape the plan
    refuses; or hand the job back (``SlotUnavailableError``) when its worker drains."""
    drain.check()
    if ctx.run_state is not None and (reason := ctx.run_state.halted()):
        raise AuthError(f"the run was stopped before this request: {reason}", status=401)
    if ctx.run_state is not None and ctx.run_state.cancelled():
        raise RunCancelled("the run was cancelled (sts-pipeline cancel) before this request; nothing was spent on it")
    if ctx.run_state is not None and ctx.run_state.held():  # back to the queue once; the task start parks it
        raise SlotUnavailableError("the run is paused (sts-pipeline pause): the job goes back and waits for resume")
    if ctx.quota is not None:
        ctx.quota.check()
    if ctx.run_state is not None:
        shapes = request_shapes(job)
        if found := ctx.run_state.refused(shapes.values()):
            shape, reason = found
            code = next(code for code, value in shapes.items() if value == shape)
            raise RefusedByPlanError(f"not sent: the service refused {shape} for this key's plan earlier in this "
                                     f"run: {reason}", code=code)


def _tell_the_run(ctx: CallContext, job: Job, error: PipelineError) -> None:
    """What one response teaches every job of the run (and, for the quota, of the account)."""
    if isinstance(error, AuthError) and ctx.run_state is not None:
        ctx.run_state.halt(error.message)
    elif isinstance(error, QuotaExceededError):
        if ctx.quota is not None:
            best_effort(ctx.quota.close, error)
        if ctx.run_state is not None:
            best_effort(ctx.run_state.pause, f"quota_exceeded: {error.message}")
    elif isinstance(error, RefusedByPlanError) and ctx.run_state is not None:
        shape = request_shapes(job).get(error.reason)
        if shape is not None:
            best_effort(ctx.run_state.refuse, shape, error.message)


def _request(ctx: CallContext, job: Job, audio: Path, out: Path, content_type: str, input_s: float) -> CallResult:
    """One request under a limiter slot; the limiter learns from every response, failed or not. The input's
    duration sizes the request's deadline, the expected output's its largest acceptable body."""
    with ctx.limiter.slot(ctx.settings.slot_wait_s):
        try:
            result = ctx.client.stream(job, audio, out, audio_content_type=content_type, input_s=input_s,
                                       expected_output_s=expected_output_s(job, input_s),
                                       stop=ctx.run_state.cancelled_now if ctx.run_state is not None else None)
        except PipelineError as error:
            if error.response is not None:
                best_effort(ctx.limiter.observe_response, error.response.status or 0, dict(error.response.headers),
                            api_status=error.response.api_code)
            raise
        best_effort(ctx.limiter.observe_response, 200, result.headers)
        return result


@contextmanager
def _reserved(ctx: CallContext, estimate: float) -> Iterator[Any]:
    """Reserve ``estimate`` credits of the run's budget for one request; settle with what it was billed.

    The body calls the yielded ``settle(credits)`` on success. On an error, what the response billed is settled (a
    200 whose stream was then cut is paid for), or the reservation is released when nothing was billed.
    """
    reservation: Reservation | None = ctx.budget.reserve(estimate) if ctx.budget else None
    settled = False

    def settle(credits: float) -> None:
        nonlocal settled
        settled = True
        if ctx.budget and reservation:
            best_effort(ctx.budget.settle, reservation, credits)

    try:
        yield settle
    except PipelineError as error:
        if not settled and ctx.budget and reservation:
            billed = billed_credits(error)
            if billed:
                best_effort(ctx.budget.settle, reservation, billed)
            else:
                best_effort(ctx.budget.release, reservation)
        raise


def _checked_length(job: Job, out: Path, input_s: float, result: CallResult) -> float:
    """The output's length, cheap enough for every attempt (``decode.output_duration_s``: the byte count of a
    headerless format, an mp3's frames, the last Ogg page of an opus; ffmpeg's decode of anything
    else); ``TransientError(cut_stream)`` when it is clearly short of the input's, and
    ``TransientError(wrong_format)`` when it does not decode as the requested format at all (the service's fault, not
    the input's: retried, and what it billed stays in the attempt record)."""
    try:
        duration_out_s = output_duration_s(out, OUTPUT_FORMATS[job.output_format])
    except InputError as error:
        raise TransientError(f"the service answered 200 with a body that does not decode as {job.output_format}: "
                             f"{error.message}", reason="wrong_format", status=200, request_id=result.request_id,
                             response=ResponseInfo(200, dict(result.headers))) from None
    expected_s = expected_output_s(job, input_s)
    if duration_out_s < expected_s * SHORT_OUTPUT_RATIO - SHORT_OUTPUT_ALLOWANCE_S:
        raise TransientError(f"the audio stream was cut: {duration_out_s:.2f} s of audio for {expected_s:.2f} s "
                             "expected", reason="cut_stream", status=200, request_id=result.request_id)
    return duration_out_s


def billed_credits(error: PipelineError) -> float:
    """What the response behind ``error`` says it billed (``character-cost``); 0 when it says nothing readable."""
    if error.response is None:
        return 0.0
    return character_cost(error.response.headers) or 0.0


def _finish(record: AttemptRecord, started: float, *, status: int | None, request_id: str | None, credits: float,
            bytes_written: int = 0) -> None:
    record.duration_s = round(time.monotonic() - started, 3)
    record.status = status
    record.request_id = request_id
    record.credits = credits
    record.bytes = bytes_written
    record.outcome = "ok"


def _fail_attempt(record: AttemptRecord, started: float, error: PipelineError) -> None:
    response = error.response
    record.duration_s = round(time.monotonic() - started, 3)
    record.status = response.status if response is not None else error.status
    record.request_id = (response.headers.get("request-id") if response is not None else None) or error.request_id
    record.credits = billed_credits(error)
    record.outcome = error.reason
    record.message = error.message
