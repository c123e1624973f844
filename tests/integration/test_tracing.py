"""Tracing with real processes: the client's request span against the offline server over HTTP, and a run submitted
with ``STS_OTEL=1`` whose worker exports over OTLP/HTTP to a receiver on loopback: every job's span is in the submit
span's trace, a child of it, with the job's requests under it, and no span holds the key or a URI."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.api.client import StsClient
from pipeline.errors import ApiError
from pipeline.local.services import LocalStack
from pipeline.manifest.job import Job
from pipeline.ops import tracing
from tests.support import VOICES, lane, wait_until, write_input, write_jsonl

JOBS = 3


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: keeps every span it is sent, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        spans, lock = self.spans, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    for resource_spans in request.resource_spans:
                        service = next(a.value.string_value for a in resource_spans.resource.attributes
                                       if a.key == "service.name")
                        spans.extend((service, span) for scope in resource_spans.scope_spans for span in scope.spans)
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[tuple[str, Any]]:
        return [(service, span) for service, span in list(self.spans) if span.name == name]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    got = OtlpReceiver()
    yield got
    got.server.shutdown()


def _values(span: Any) -> dict[str, Any]:
    """An OTLP span's attributes as a dict of plain values."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_the_request_span_has_the_request_id_the_response_carried(offline_sts: LocalStack, tmp_path: Path,
                                                                   spans: InMemorySpanExporter) -> None:
    key = f"sk_{uuid.uuid4().hex}"
    source = write_input(tmp_path / "in.wav", 1.0, seed=2)
    job = Job(input="s3://in-bucket/in.wav", voice_id=VOICES[0], output_format="mp3_44100_128")
    with StsClient(offline_sts.sts_url, key) as client:
        result = client.stream(job, source, tmp_path / "out.mp3", audio_content_type="audio/wav", input_s=1.0)
        with pytest.raises(ApiError) as caught:
            client.stream(job.model_copy(update={"voice_id": "NoSuchVoice000000000"}), source, tmp_path / "x.mp3",
                          audio_content_type="audio/wav", input_s=1.0)
    ok, refused = spans.get_finished_spans()
    assert result.request_id and dict(ok.attributes or {}) == {
        "http.request.method": "POST", "sts.voice_id": VOICES[0], "sts.output_format": "mp3_44100_128",
        "http.response.status_code": 200, "sts.api.request_id": result.request_id}
    assert caught.value.response is not None
    refused_id = caught.value.response.headers.get("request-id")
    assert refused_id and dict(refused.attributes or {})["sts.api.request_id"] == refused_id != result.request_id
    assert dict(refused.attributes or {})["http.response.status_code"] == 404
    assert dict(refused.attributes or {})["sts.api.error_code"] == caught.value.response.api_code
    assert all(key not in str(value) for span in (ok, refused) for value in (span.attributes or {}).values())


def test_a_worker_s_job_spans_are_children_of_the_submit_span(offline_sts: LocalStack, s3, bucket: str,
                                                              tmp_path: Path, receiver: OtlpReceiver) -> None:
    short, long = write_input(tmp_path / "in.wav", 1.0, seed=5), write_input(tmp_path / "long.wav", 7.0, seed=6)
    lines = []
    for i in range(JOBS):  # the first in segments (STS_MAX_SEGMENT_SECONDS=4): its requests run in other threads
        s3.upload_file(str(long if i == 0 else short), bucket, f"in/t{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/t{i}.wav", "voice_id": VOICES[i], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/t{i}.pcm"})
    manifest = write_jsonl(tmp_path / "traced.jsonl", lines)
    otel = {"STS_OTEL": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    with lane(offline_sts, STS_RUNS_URI=f"s3://{bucket}/runs", **otel) as test_lane:
        test_lane.start_worker(concurrency=2, OTEL_SERVICE_NAME="sts-worker", STS_MAX_SEGMENT_SECONDS="4")
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "traced-run", "--wait", "--timeout", "120",
                                  OTEL_SERVICE_NAME="sts-submit")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: len(receiver.named(tracing.JOB_SPAN)) >= JOBS
                   and len(receiver.named(tracing.REQUEST_SPAN)) >= JOBS + 1, 30, "the worker's spans")
        api_key = test_lane.api_key
    [(submit_service, submit)] = receiver.named(tracing.SUBMIT_SPAN)
    jobs = receiver.named(tracing.JOB_SPAN)
    assert submit_service == "sts-submit" and _values(submit)["sts.run_id"] == "traced-run"
    assert len(jobs) == JOBS and {service for service, _ in jobs} == {"sts-worker"}
    for _, span in jobs:
        assert span.trace_id == submit.trace_id and span.parent_span_id == submit.span_id
        values = _values(span)
        assert values["sts.run_id"] == "traced-run" and values["sts.job.state"] == "succeeded"
    assert sorted(_values(span)["sts.line"] for _, span in jobs) == [1, 2, 3]
    line_of = {span.span_id: _values(span)["sts.line"] for _, span in jobs}
    requests = receiver.named(tracing.REQUEST_SPAN)
    assert all(span.parent_span_id in line_of and span.trace_id == submit.trace_id for _, span in requests)
    per_line = Counter(line_of[span.parent_span_id] for _, span in requests)
    assert per_line[2] == per_line[3] == 1 and per_line[1] >= 2, per_line  # 7 s in segments of at most 4 s
    assert all(_values(span)["sts.api.request_id"] for _, span in requests)
    for _, span in receiver.spans:
        for value in _values(span).values():
            assert api_key not in str(value) and "s3://" not in str(value) and bucket not in str(value)
