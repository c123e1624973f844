"""The workers' metrics: one object per measured thing, and the few calls the conversion makes to move them.

Why lazy: prometheus-client picks its value store (in-process or the multiprocess files under
``PROMETHEUS_MULTIPROC_DIR``) when it is first imported, and the worker sets that directory just before it forks its
pool. Importing this module is therefore free; the objects are built on the first record.

Why best effort: a metric is never worth a job. Every ``record_*`` swallows its own errors.

Cardinality: labels take bounded values only. ``reason``/``code`` are the pipeline's own failure codes
(``pipeline.reasons``; anything else becomes ``other``), ``status`` an HTTP status or ``none``, ``kind`` one of the
three 429 kinds. No job id, key, URI or API key is ever a label.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.reasons import Reason

log = logging.getLogger(__name__)

__all__ = ["METRIC_NAMES", "job_finished", "job_started", "record_attempt", "worker_metrics"]

#: minutes-long segments and hours-long episodes: seconds up to two hours
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600, 7200)
#: a night's queue: seconds up to half a day
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200)
#: one request holds at most five minutes of audio
REQUEST_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600)

_KNOWN = {reason.value for reason in Reason} | {"ok", "succeeded", "other"}
_HTTP = re.compile(r"^http_[1-5][0-9]{2}$")
_KINDS = {"concurrent_limit_exceeded", "rate_limit_exceeded", "system_busy", "rate_limited"}


class AttemptLike(Protocol):
    """What ``record_attempt`` reads of an attempt (``pipeline.conversion.calls.AttemptRecord``)."""

    n: int
    status: int | None
    outcome: str
    duration_s: float
    credits: float


@dataclass(frozen=True)
class WorkerMetrics:
    """The metric objects of a worker process (names: ``METRIC_NAMES``)."""

    jobs: Any
    requests: Any
    throttled: Any
    retries: Any
    credits: Any
    audio_seconds: Any
    job_duration: Any
    queue_wait: Any
    request_duration: Any


#: the names the workers serve, as the exposition shows them (counters with ``_total``, histograms' series apart)
METRIC_NAMES = {
    "sts_jobs_finished_total": "jobs that ended, by state and reason",
    "sts_api_requests_total": "requests sent to the service, by HTTP status and error code",
    "sts_api_throttled_total": "429 answers, by kind",
    "sts_api_retries_total": "requests that were a retry of an earlier attempt, by the reason of the retry",
    "sts_credits_spent_total": "credits the service billed (character-cost)",
    "sts_audio_seconds_converted_total": "input seconds converted by successful requests",
    "sts_job_duration_seconds": "from a job's start on a worker to its end, by state",
    "sts_queue_wait_seconds": "from submit to a job's start on a worker",
    "sts_api_request_duration_seconds": "one request, from send to the last byte, by outcome class",
}

_lock = threading.Lock()
_metrics: WorkerMetrics | None = None
_started = threading.local()


def worker_metrics() -> WorkerMetrics:
    """The process's metric objects, built on first use (see the module docstring for why lazily)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _build()
        return _metrics


def _build() -> WorkerMetrics:
    from prometheus_client import Counter, Histogram

    def doc(name: str) -> str:
        return METRIC_NAMES[name]

    return WorkerMetrics(
        jobs=Counter("sts_jobs_finished", doc("sts_jobs_finished_total"), ["state", "reason"]),
        requests=Counter("sts_api_requests", doc("sts_api_requests_total"), ["status", "code"]),
        throttled=Counter("sts_api_throttled", doc("sts_api_throttled_total"), ["kind"]),
        retries=Counter("sts_api_retries", doc("sts_api_retries_total")),
        credits=Counter("sts_credits_spent", doc("sts_credits_spent_total")),
        audio_seconds=Counter("sts_audio_seconds_converted", doc("sts_audio_seconds_converted_total")),
        job_duration=Histogram("sts_job_duration_seconds", doc("sts_job_duration_seconds"), ["state"],
                               buckets=DURATION_BUCKETS),
        queue_wait=Histogram("sts_queue_wait_seconds", doc("sts_queue_wait_seconds"), buckets=QUEUE_WAIT_BUCKETS),
        request_duration=Histogram("sts_api_request_duration_seconds", doc("sts_api_request_duration_seconds"),
                                   ["outcome"], buckets=REQUEST_BUCKETS),
    )


def bounded(code: str | None) -> str:
    """A label value from a reason code: the pipeline's own codes and ``http_<status>`` as they are, else ``other``."""
    if code in _KNOWN or (code and _HTTP.match(code)):
        return str(code)
    return "other"


def _status(status: int | None) -> str:
    return str(status) if isinstance(status, int) and 100 <= status <= 599 else "none"


def record_attempt(attempt: AttemptLike, *, audio_s: float = 0.0, kind: str | None = None) -> None:
    """One request ended (its record is final): count it, its cost, its audio (``audio_s``, on success) and, for a
    429, its kind. Never raises."""
    try:
        m = worker_metrics()
        ok = attempt.outcome == "ok"
        m.requests.labels(status=_status(attempt.status), code=bounded(attempt.outcome)).inc()
        m.request_duration.labels(outcome="ok" if ok else "error").observe(max(0.0, attempt.duration_s))
        if attempt.n > 1:
            m.retries.inc()
        if attempt.credits > 0:
            m.credits.inc(attempt.credits)
        if ok and audio_s > 0:
            m.audio_seconds.inc(audio_s)
        if attempt.status == 429:
            m.throttled.labels(kind=kind if kind in _KINDS else "rate_limited").inc()
    except Exception as error:  # a metric is never worth a job
        log.debug("metrics: attempt not recorded (%s)", type(error).__name__)


def job_started(queued_at: float | None) -> None:
    """A job starts on this process: observe its queue wait and remember when it started. Never raises."""
    try:
        _started.at = time.monotonic()
        if queued_at:
            worker_metrics().queue_wait.observe(max(0.0, time.time() - queued_at))
    except Exception as error:
        log.debug("metrics: job start not recorded (%s)", type(error).__name__)


def job_finished(state: str, reason: str | None = None) -> None:
    """A job ended in ``state`` (``reason``: its failure code; none for a success). Never raises."""
    try:
        m = worker_metrics()
        m.jobs.labels(state=str(state), reason=bounded(reason or "ok")).inc()
        started = getattr(_started, "at", None)
        _started.at = None
        if started is not None:
            m.job_duration.labels(state=str(state)).observe(time.monotonic() - started)
    except Exception as error:
        log.debug("metrics: job end not recorded (%s)", type(error).__name__)
