"""Tracing in one process: off imports nothing, asked for without the packages it says so once, on its spans carry
the response's request id and never a secret, and a job's span is a child of the submit span its message names."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.api.client import StsClient
from pipeline.errors import RateLimitedError
from pipeline.manifest.job import Job
from pipeline.ops import tracing
from pipeline.run.message import JobMessage

KEY = "sk_tracingunittestkey0123456789abcdef"


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])


# a job through the client (MockTransport), a submit span with its carrier and a job span, all in one process
_EXERCISE = """
    import logging, sys, httpx, tempfile, pathlib
    logging.basicConfig(level=logging.INFO)
    import pipeline.cli
    from pipeline.api.client import StsClient
    from pipeline.manifest.job import Job
    from pipeline.ops import tracing
    from pipeline.run.message import JobMessage
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "in.wav").write_bytes(b"RIFF")
    answer = httpx.Response(200, content=b"\\x01\\x00" * 800, headers={"request-id": "req-1"})
    job = Job(input="s3://in-bucket/in.wav", voice_id="VoiceAbc123", output_format="pcm_16000")
    for _ in range(2):
        with StsClient("http://sts.test", "k" * 20, transport=httpx.MockTransport(lambda r: answer)) as client:
            client.stream(job, tmp / "in.wav", tmp / "out.pcm")
        with tracing.submit_span("run-1", jobs=1, priority="normal") as span:
            carrier = span.carrier()
        message = JobMessage("run-1", "s", 1, "j", "s3://b/o.pcm", {}, 0.0, trace=carrier)
        with tracing.job_span(message) as job_span:
            job_span.set("sts.job.state", "succeeded")
    print("trace" in message.to_dict(), sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_off_no_opentelemetry_module_is_imported() -> None:
    done = _python(_EXERCISE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False []"
    assert "tracing" not in done.stderr


def test_asked_for_without_the_packages_one_log_line_and_the_work_goes_on() -> None:
    blocker = """
        import sys
        class NoOtel:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoOtel())
    """
    done = _python(textwrap.dedent(blocker) + textwrap.dedent(_EXERCISE), STS_OTEL="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False []"
    lines = [line for line in done.stderr.splitlines() if "tracing is off" in line]
    assert len(lines) == 1, done.stderr
    assert "OpenTelemetry is not installed" in lines[0] and "sts-pipeline[otel]" in lines[0]


def test_an_unknown_exporter_is_said_once_and_tracing_stays_off() -> None:
    done = _python(_EXERCISE, STS_OTEL="1", OTEL_TRACES_EXPORTER="zipkin")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("False")
    lines = [line for line in done.stderr.splitlines() if "tracing is off" in line]
    assert len(lines) == 1 and "OTEL_TRACES_EXPORTER='zipkin'" in lines[0], done.stderr


def test_console_exporter_prints_the_spans() -> None:
    done = _python(_EXERCISE, STS_OTEL="1", OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="sts-unit")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("True [")
    for name in (tracing.REQUEST_SPAN, tracing.SUBMIT_SPAN, tracing.JOB_SPAN):
        assert done.stdout.count(f'"name": "{name}"') == 2, done.stdout[-3000:]
    assert '"service.name": "sts-unit"' in done.stdout


def _attributes(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def test_an_error_answer_s_span_has_its_status_code_and_request_id_never_the_key(
        spans: InMemorySpanExporter, tmp_path: Path) -> None:
    (tmp_path / "in.wav").write_bytes(b"RIFF")
    body = {"detail": {"type": "rate_limit_error", "code": "concurrent_limit_exceeded", "message": f"key {KEY}",
                       "request_id": "req-body", "status": "too_many_concurrent_requests"}}
    answer = httpx.Response(429, json=body, headers={"request-id": f"req-429 {KEY}", "retry-after": "1"})
    job = Job(input="s3://in-bucket/in.wav", voice_id="VoiceAbc123", output_format="mp3_44100_128")
    with StsClient("http://sts.test", KEY, transport=httpx.MockTransport(lambda request: answer)) as client, \
            pytest.raises(RateLimitedError):
        client.stream(job, tmp_path / "in.wav", tmp_path / "out.mp3")
    [span] = spans.get_finished_spans()
    assert span.name == tracing.REQUEST_SPAN and span.status.status_code.name == "ERROR"
    attributes = dict(span.attributes or {})
    assert attributes == {"http.request.method": "POST", "sts.voice_id": "VoiceAbc123",
                          "sts.output_format": "mp3_44100_128", "http.response.status_code": 429,
                          "sts.api.request_id": "req-429 ***", "sts.api.error_code": "concurrent_limit_exceeded",
                          "error.type": "rate_limited"}
    assert span.events == ()  # no exception event: its message and stack name URIs


def test_a_job_span_is_a_child_of_the_submit_span_its_message_carries(spans: InMemorySpanExporter) -> None:
    with tracing.submit_span("run-7", jobs=2, priority="high") as submit:
        carrier = submit.carrier()
    assert carrier is not None and set(carrier) == {"traceparent"}
    message = JobMessage.from_dict(JobMessage("run-7", "a.jsonl", 3, "job-3", "s3://b/o", {}, 1.0,
                                              trace=carrier).to_dict())
    seen: list[str] = []

    def in_a_thread(item: str) -> None:
        with tracing.api_request("POST", voice_id=item, output_format="pcm_16000") as request:
            request.answered(200, "req-7")
        seen.append(item)

    with tracing.job_span(message) as job:
        worker = threading.Thread(target=tracing.carried(in_a_thread), args=("VoiceAbc123",))
        worker.start()
        worker.join()
        tracing.job_reason("rejected_audio")
        job.set("sts.job.state", "rejected")
    by_name = {span.name: span for span in spans.get_finished_spans()}
    submit_span, job_span, request_span = (by_name[name] for name in (tracing.SUBMIT_SPAN, tracing.JOB_SPAN,
                                                                       tracing.REQUEST_SPAN))
    assert seen == ["VoiceAbc123"]
    assert job_span.context.trace_id == submit_span.context.trace_id == request_span.context.trace_id
    assert job_span.parent is not None and job_span.parent.span_id == submit_span.context.span_id
    assert request_span.parent is not None and request_span.parent.span_id == job_span.context.span_id
    assert dict(job_span.attributes or {}) == {"sts.run_id": "run-7", "sts.shard": "a.jsonl", "sts.line": 3,
                                               "sts.job_id": "job-3", "sts.job.reason": "rejected_audio",
                                               "sts.job.state": "rejected"}
    assert dict(submit_span.attributes or {}) == {"sts.run_id": "run-7", "sts.run.jobs": 2,
                                                  "sts.run.priority": "high"}


def test_a_job_that_goes_back_to_the_queue_says_so(spans: InMemorySpanExporter) -> None:
    from pipeline.errors import SlotUnavailableError

    message = JobMessage("run-8", "a.jsonl", 1, "job-1", "s3://b/o", {}, 1.0)
    with pytest.raises(SlotUnavailableError), tracing.job_span(message):
        raise SlotUnavailableError("no slot within 30 s")
    [span] = spans.get_finished_spans()
    assert span.parent is None  # an untraced message: the job's span starts its own trace
    assert dict(span.attributes or {})["sts.job.state"] == "queued"
    assert dict(span.attributes or {})["sts.job.reason"] == SlotUnavailableError.reason


def test_messages_without_trace_decode_and_untraced_ones_do_not_grow() -> None:
    old = {"run_id": "r", "shard": "s", "line": 1, "job_id": "j", "output": "s3://b/o", "job": {}, "queued_at": 2.0}
    message = JobMessage.from_dict(old)
    assert message.trace is None and message.to_dict() == old
    traced = JobMessage.from_dict({**old, "trace": {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}})
    assert JobMessage.from_dict(traced.to_dict()) == traced
    with pytest.raises(KeyError):
        JobMessage.from_dict({key: value for key, value in old.items() if key != "job_id"})


def test_attributes_are_redacted_printable_and_bounded(spans: InMemorySpanExporter) -> None:
    with tracing.api_request("POST", voice_id="v\x1b[2Jx" * 100, output_format="pcm_16000") as request:
        request.answered(200, f"xi-api-key: {KEY}")
    [attributes] = _attributes(spans)
    assert attributes["sts.api.request_id"] == "xi-api-key: ***"
    voice = str(attributes["sts.voice_id"])
    assert "\x1b" not in voice and voice.startswith("v\\x1b[2Jx") and len(voice) == tracing.ATTRIBUTE_CHARS
