"""One conversion with everything around the HTTP call: budget, shared limiter, retries, cut-stream detection.

Every attempt is recorded (time, status, request id, wait, cost) for provenance. Transient faults are retried with
exponential backoff and full jitter (never shorter than Retry-After) up to ``max_attempts``; a 422 is never retried;
a 401 halts the whole run.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from pipeline.api.backoff import backoff_delay_s
from pipeline.run.budget import Budget
from pipeline.config import Settings
from pipeline.errors import AuthError, PipelineError, SlotUnavailableError, TransientError
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import Job
from pipeline.api.limiter import Limiter
from pipeline.audio.quality import QualityReport, measure
from pipeline.run.state import RunState, best_effort
from pipeline.api.client import CallError, CallResult, StsClient

log = logging.getLogger(__name__)

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


@dataclass
class Conversion:
    """A successful conversion: the last call and every attempt it took."""

    result: CallResult
    quality: QualityReport
    attempts: list[AttemptRecord] = field(default_factory=list)


@dataclass
class CallContext:
    """What an attempt loop needs, built once per worker process."""

    settings: Settings
    client: StsClient
    limiter: Limiter
    run_state: RunState | None = None
    budget: Budget | None = None
    rng: random.Random = field(default_factory=random.Random)


def expected_output_s(job: Job, input_s: float) -> float:
    speed = job.voice_settings.speed if job.voice_settings and job.voice_settings.speed else 1.0
    return input_s / speed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def convert_with_retries(ctx: CallContext, job: Job, audio: Path, out: Path, *, input_s: float,
                         audio_content_type: str, segment: int | None = None,
                         attempts: list[AttemptRecord] | None = None) -> Conversion:
    """Convert ``audio`` into ``out``; raise the final PipelineError when attempts run out or retrying cannot help.

    ``attempts`` (if given) collects every attempt, also when the conversion fails in the end.
    """
    settings = ctx.settings
    records = attempts if attempts is not None else []
    output_format = OUTPUT_FORMATS[job.output_format]
    wait_s = 0.0
    for n in range(1, settings.max_attempts + 1):
        if ctx.run_state is not None and (reason := ctx.run_state.halted()):
            raise AuthError(f"the run was stopped before this request: {reason}", status=401)
        record = AttemptRecord(n=n, started_at=_now(), segment=segment, wait_before_s=round(wait_s, 3))
        reservation = ctx.budget.reserve(input_s * settings.credits_per_second) if ctx.budget else None
        started = time.monotonic()
        try:
            with ctx.limiter.slot(settings.slot_wait_s):
                try:
                    result = ctx.client.convert(job, audio, out, audio_content_type=audio_content_type)
                except CallError as call_error:
                    best_effort(ctx.limiter.observe_response, call_error.failed.status or 0,
                                 call_error.failed.headers, api_status=call_error.failed.api_status)
                    raise
                best_effort(ctx.limiter.observe_response, 200, result.headers)
        except SlotUnavailableError:
            if ctx.budget and reservation:
                ctx.budget.release(reservation)
            raise
        except CallError as call_error:
            error = call_error.error
            billed = _billed(call_error.failed.headers)
            if ctx.budget and reservation:
                if billed:
                    best_effort(ctx.budget.settle, reservation, billed)
                else:
                    best_effort(ctx.budget.release, reservation)
            _finish(record, started, error=error, status=call_error.failed.status,
                    request_id=call_error.failed.headers.get("request-id"), credits=billed)
            records.append(record)
            if isinstance(error, AuthError) and ctx.run_state is not None:
                ctx.run_state.halt(error.message)
            if not isinstance(error, TransientError) or n == settings.max_attempts:
                raise error from None
            wait_s = backoff_delay_s(n, base_s=settings.backoff_base_s, max_s=settings.backoff_max_s,
                                     retry_after_s=error.retry_after_s, rng=ctx.rng)
            log.info("attempt %d of job voice=%s failed (%s); retrying in %.1f s", n, job.voice_id, error.reason, wait_s)
            time.sleep(wait_s)
            continue
        credits = result.character_cost or 0.0
        if ctx.budget and reservation:
            best_effort(ctx.budget.settle, reservation, credits)
        quality = measure(out, output_format=output_format, input_duration_s=expected_output_s(job, input_s))
        short = quality.duration_out_s < expected_output_s(job, input_s) * SHORT_OUTPUT_RATIO - SHORT_OUTPUT_ALLOWANCE_S
        if short:
            error = TransientError(
                f"the audio stream was cut: {quality.duration_out_s:.2f} s of audio for "
                f"{expected_output_s(job, input_s):.2f} s expected", reason="cut_stream", status=200,
                request_id=result.request_id)
            _finish(record, started, error=error, status=200, request_id=result.request_id, credits=credits,
                    bytes_written=result.bytes_written)
            records.append(record)
            if n == settings.max_attempts:
                raise error
            wait_s = backoff_delay_s(n, base_s=settings.backoff_base_s, max_s=settings.backoff_max_s,
                                     retry_after_s=None, rng=ctx.rng)
            time.sleep(wait_s)
            continue
        _finish(record, started, error=None, status=200, request_id=result.request_id, credits=credits,
                bytes_written=result.bytes_written)
        records.append(record)
        return Conversion(result, quality, records)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover



def _billed(headers: dict[str, str]) -> float:
    try:
        return float(headers.get("character-cost", 0) or 0)
    except ValueError:
        return 0.0


def _finish(record: AttemptRecord, started: float, *, error: PipelineError | None, status: int | None,
            request_id: str | None, credits: float, bytes_written: int = 0) -> None:
    record.duration_s = round(time.monotonic() - started, 3)
    record.status = status
    record.request_id = request_id
    record.credits = credits
    record.bytes = bytes_written
    record.outcome = "ok" if error is None else error.reason
    record.message = None if error is None else error.message
