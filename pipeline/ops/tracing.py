"""OpenTelemetry tracing: optional (the ``[otel]`` extra) and off unless ``STS_OTEL=1``.

The rule: a process traces when ``STS_OTEL=1``, and only then. The standard variables then say where spans go
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, default ``http://localhost:4318``;
``OTEL_SERVICE_NAME``; ``OTEL_BSP_*`` for batching; ``OTEL_TRACES_EXPORTER=otlp|console``), but none of them turns
tracing on by itself: an endpoint set cluster-wide for other services does not make every worker export. Asked for
without the packages installed, tracing says so on one log line and stays off. Off, this module imports no
``opentelemetry`` module and each hook costs a pid comparison (redis-py 8 imports ``opentelemetry.sdk.metrics`` on its
own wherever the SDK is installed; that is not ours to stop).

Spans (attributes in brackets):

    sts.run.submit    (submit, retry) one per batch of task messages sent [run id, jobs, priority]; its W3C
                      context goes into every message (``JobMessage.trace``)
    sts.job           (worker) one per delivery of a job, a child of its run's submit span [run id, shard, line,
                      job id, final state (``queued`` when it went back undecided), reason]
    sts.api.request   (worker) one per HTTP request to the vendor, a child of its job [method, status code, the
                      vendor's ``request-id``, voice id, output format, the API's error code, the reason]

Never in a span: the API key, a header other than ``request-id``, a URI (inputs, outputs and presigned URLs can carry
credentials), an exception's message or stack (they name URIs). Every string is redacted (``pipeline.errors.redact``),
made printable and cut to 256 characters, since request ids and voice ids are others' text.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from pipeline import __version__
from pipeline.config import get_settings
from pipeline.errors import PipelineError, redact
from pipeline.text import printable

__all__ = ["JOB_SPAN", "REQUEST_SPAN", "SUBMIT_SPAN", "Traced", "api_request", "carried", "job_reason", "job_span",
           "stop", "submit_span", "trace_to"]

log = logging.getLogger(__name__)

SUBMIT_SPAN = "sts.run.submit"
JOB_SPAN = "sts.job"
REQUEST_SPAN = "sts.api.request"
#: the longest string attribute kept
ATTRIBUTE_CHARS = 256
_SERVICE_NAME = "sts-pipeline"

_lock = threading.Lock()
_decided_pid: int | None = None  # the process whose decision ``_tracer`` holds (a forked child decides again)
_tracer: Any = None  # an opentelemetry Tracer when this process traces, else None
_provider: Any = None

T = TypeVar("T")


class TracedJob(Protocol):
    """What a job span reads from a task message (``pipeline.run.message.JobMessage``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def shard(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def job_id(self) -> str: ...
    @property
    def trace(self) -> dict[str, str] | None: ...


def _clean(value: object) -> str | int | float | bool:
    if isinstance(value, (bool, int, float)):
        return value
    return redact(printable(value))[:ATTRIBUTE_CHARS]


class Traced:
    """A span in progress, or nothing at all when tracing is off (then every method does nothing)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, name: str, value: object) -> None:
        """Set one attribute, cleaned (see the module docstring); None sets nothing."""
        if self._span is not None and value is not None:
            self._span.set_attribute(name, _clean(value))

    def answered(self, status: int, request_id: str | None) -> None:
        """A request span's response: its status and the vendor's ``request-id``."""
        self.set("http.response.status_code", status)
        self.set("sts.api.request_id", request_id)

    def carrier(self) -> dict[str, str] | None:
        """This span's W3C trace context, for a message that crosses to another process; None when off."""
        if self._span is None:
            return None
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def failed(self, error: BaseException) -> None:
        """Mark the span as ended by ``error``: its reason code, never its message."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.set("error.type", _reason(error))
        self._span.set_status(Status(StatusCode.ERROR))


def _reason(error: BaseException) -> str:
    return error.reason if isinstance(error, PipelineError) else type(error).__name__


_OFF = Traced()


def _new_provider() -> Any:
    """A TracerProvider named by OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES), else ``sts-pipeline``."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _SERVICE_NAME}))
    return TracerProvider(resource=resource)


def _build_provider(exporter_names: str) -> Any:
    """A TracerProvider exporting in batches to the named exporters; raises ImportError without the packages."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    names = [name.strip() for name in exporter_names.split(",") if name.strip()]
    if not names or any(name not in ("otlp", "console") for name in names):
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_names!r}: this pipeline exports to otlp or console")
    provider = _new_provider()
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def _decide() -> None:
    global _decided_pid, _tracer, _provider
    _decided_pid, _tracer, _provider = os.getpid(), None, None
    settings = get_settings()
    if not settings.otel:
        return
    try:
        _provider = _build_provider(settings.otel_traces_exporter)
    except ImportError as missing:
        log.warning("STS_OTEL=1 but OpenTelemetry is not installed (no module %s): tracing is off; install it with "
                    "pip install 'sts-pipeline[otel]'", missing.name)
        return
    except ValueError as wrong:
        log.warning("STS_OTEL=1 but %s: tracing is off", wrong)
        return
    _tracer = _provider.get_tracer("sts-pipeline", __version__)


def _active() -> Any:
    """This process's tracer, or None when it does not trace (decided once per process, on the first span)."""
    if _decided_pid != os.getpid():
        with _lock:
            if _decided_pid != os.getpid():
                _decide()
    return _tracer


def trace_to(exporter: Any) -> None:
    """Trace this process into ``exporter`` (an SDK ``SpanExporter``), each span as it ends, whatever STS_OTEL says:
    for a program that embeds the pipeline with its own exporter, and for tests (the SDK's in-memory one)."""
    global _decided_pid, _tracer, _provider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with _lock:
        stop()
        _provider = _new_provider()
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
        _decided_pid, _tracer = os.getpid(), _provider.get_tracer("sts-pipeline", __version__)


def stop() -> None:
    """Export what is pending and stop tracing in this process; the next span decides again from STS_OTEL."""
    global _decided_pid, _tracer, _provider
    if _provider is not None and _decided_pid == os.getpid():
        _provider.shutdown()
    _decided_pid, _tracer, _provider = None, None, None


@contextmanager
def _span(name: str, kind: str, attributes: dict[str, object], parent: dict[str, str] | None = None,
          on_error: Callable[[Traced, BaseException], None] = Traced.failed) -> Iterator[Traced]:
    tracer = _active()
    if tracer is None:
        yield _OFF
        return
    from opentelemetry.trace import SpanKind

    context = None
    if parent is not None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract(parent)
    clean = {key: _clean(value) for key, value in attributes.items() if value is not None}
    with tracer.start_as_current_span(name, context=context, kind=SpanKind[kind], attributes=clean,
                                      record_exception=False, set_status_on_exception=False) as span:
        traced = Traced(span)
        try:
            yield traced
        except BaseException as error:
            on_error(traced, error)
            raise


def submit_span(run_id: str, *, jobs: int, priority: str) -> AbstractContextManager[Traced]:
    """The span of one submit's messages; ``carrier()`` is the context each message carries to its worker."""
    return _span(SUBMIT_SPAN, "PRODUCER", {"sts.run_id": run_id, "sts.run.jobs": jobs, "sts.run.priority": priority})


def _requeued(traced: Traced, error: BaseException) -> None:
    traced.set("sts.job.state", "queued")  # run_job raises only for a job that goes back to the queue undecided
    traced.set("sts.job.reason", _reason(error))
    traced.failed(error)


def job_span(message: TracedJob) -> AbstractContextManager[Traced]:
    """The span of one delivery of a job, a child of the submit span whose context the message carries."""
    carrier = message.trace if isinstance(message.trace, dict) else None
    if carrier is not None:
        carrier = {key: value for key, value in carrier.items() if isinstance(key, str) and isinstance(value, str)}
    return _span(JOB_SPAN, "CONSUMER", {"sts.run_id": message.run_id, "sts.shard": message.shard,
                                        "sts.line": message.line, "sts.job_id": message.job_id},
                 parent=carrier, on_error=_requeued)


def job_reason(reason: str) -> None:
    """Note the reason of the job ending now (failed, rejected, deferred, cancelled) on its span."""
    if _active() is None:
        return
    from opentelemetry import trace

    Traced(trace.get_current_span()).set("sts.job.reason", reason)


def _request_failed(traced: Traced, error: BaseException) -> None:
    if isinstance(error, PipelineError):  # what the response said, when one came (a 200 cut short is one)
        response = error.response
        status = error.status or (response.status if response else None)
        request_id = (response.headers.get("request-id") if response else None) or error.request_id
        if status is not None:
            traced.answered(status, request_id)
        traced.set("sts.api.error_code", response.api_code if response else None)
    traced.failed(error)


def api_request(method: str, *, voice_id: str, output_format: str) -> AbstractContextManager[Traced]:
    """The span of one HTTP request to the vendor; ``answered()`` records a response the client accepted."""
    return _span(REQUEST_SPAN, "CLIENT", {"http.request.method": method, "sts.voice_id": voice_id,
                                          "sts.output_format": output_format}, on_error=_request_failed)


def carried(function: Callable[[T], Any]) -> Callable[[T], Any]:
    """``function`` run in the caller's context from another thread (a job's segments): their request spans stay
    children of the job's span. Off, ``function`` itself."""
    if _active() is None:
        return function
    context = contextvars.copy_context()
    return lambda item: context.copy().run(function, item)
