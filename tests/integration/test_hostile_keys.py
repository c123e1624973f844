"""Hostile keys, hostile text and a hostile broker, end to end: real workers, the offline server, moto's S3, Redis.

- two submits of one manifest at the same moment pay every job once (the claim);
- outputs on the pipeline's own keys (records, ``.work/``, a run's copy, an input) or too long for their records are
  refused by ``validate`` and ``submit`` as FILE:LINE;
- an object the pipeline did not write is not overwritten (``output_exists``) unless the line or run says so;
- a broker that may evict keys is refused by ``submit`` and ``worker`` (exit 2, with the fix) unless overridden;
- a 422 that echoes the API key, carries ESC sequences and a formula-shaped request id leaves no key in the records
  or the JSON/CSV/HTML reports, no ESC on the terminal or in the worker log, and no live formula in the CSV.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.local.secret_scan import SecretScanner
from pipeline.local.services import LocalStack, free_port, wait_for_port
from pipeline.manifest.keys import MAX_OUTPUT_KEY_BYTES
from pipeline.run.broker import FIX_COMMAND, FIX_CONF_LINE
from tests.support import VOICES, lane, queued, sts_stats, wait_until, write_input, write_jsonl

TAG = uuid.uuid4().hex[:8]
FAST = {"STS_BACKOFF_BASE_S": "0.1", "STS_BACKOFF_MAX_S": "0.5", "STS_MAX_ATTEMPTS": "2",
        "STS_CLAIM_WAIT_S": "1", "STS_REQUEUE_DELAY_S": "1"}
ESC = "\x1b[2J\x1b[31m"


def _get(s3: Any, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _exists(s3: Any, uri: str) -> bool:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=key) and any(
        item["Key"] == key for item in s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"])


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's offline server: every answer takes at least 2 s, so two deliveries of one job overlap."""
    with LocalStack(workdir=tmp_path_factory.mktemp("keys-sts")) as own:
        own.start_sts("--latency-fixed", "2")
        yield own.sts_url


@pytest.fixture
def clips(s3: Any, tmp_path: Path) -> tuple[str, list[str]]:
    """A fresh bucket with three 1-s inputs; returns the bucket and the inputs' URIs."""
    bucket = f"keys-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    uris = []
    for n in range(3):
        s3.upload_file(str(write_input(tmp_path / f"clip{n}.wav", 1.0, seed=n)), bucket, f"in/clip{n}.wav")
        uris.append(f"s3://{bucket}/in/clip{n}.wav")
    return bucket, uris


def _line(source: str, output: str, n: int = 0, **fields: Any) -> dict[str, Any]:
    return {"input": source, "voice_id": VOICES[n % len(VOICES)], "output_format": "pcm_16000", "output": output,
            **fields}


# --- (1) two submits of the same manifest at the same moment

def test_two_submits_at_the_same_moment_pay_every_job_once(stack: LocalStack, s3: Any, slow_server: str,
                                                           clips: tuple[str, list[str]], tmp_path: Path) -> None:
    bucket, inputs = clips
    outputs = [f"s3://{bucket}/out/twice-{n}.pcm" for n in range(2)]
    manifest = write_jsonl(tmp_path / "twice.jsonl", [_line(inputs[n], outputs[n], n) for n in range(2)])
    with lane(stack, STS_API_BASE_URL=slow_server, **FAST) as test_lane:
        test_lane.start_worker(concurrency=4)  # room for all four deliveries at once
        httpx.post(f"{slow_server}/_admin/reset", timeout=5)
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(test_lane.cli, "submit", str(manifest), "--wait", "--timeout", "120",
                                timeout_s=180) for _ in range(2)]
            results = [run.result() for run in runs]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(_get(s3, output + ".provenance.json")) for output in outputs]
    # every request the server answered is an attempt of the one record of its job: no second delivery paid
    # (on a quiet machine that is one request a job; a retried network fault would add a recorded attempt)
    assert sts_stats(slow_server)["requests_total"] == sum(len(r["attempts"]) for r in records)
    assert all(r["cost"]["requests"] == len(r["attempts"]) >= 1 for r in records)
    assert not any(r.get("superseded_request_ids") for r in records)


# --- (2) and (4): outputs on the pipeline's own keys, or too long for them

def test_outputs_on_reserved_or_colliding_keys_are_refused_as_file_line(stack: LocalStack, tmp_path: Path) -> None:
    out = "s3://keys-refused/out"
    long_key = "k" * (1020 - len("out/") - 4) + ".pcm"  # a 1,020-byte key: fits S3, its records do not
    lines = [
        _line("s3://keys-refused/in/a.wav", f"{out}/a.pcm"),
        _line("s3://keys-refused/in/b.wav", f"{out}/a.pcm.provenance.json"),
        _line("s3://keys-refused/in/c.wav", f"{out}/a.pcm.failure.json"),
        _line("s3://keys-refused/in/d.wav", f"{out}/a.pcm.work/seg-0000.pcm_16000"),
        _line("s3://keys-refused/in/e.wav", "s3://keys-refused/in/a.wav"),
        _line("s3://keys-refused/in/f.wav", "s3://keys-refused/sts-runs/run-1/manifests/m.jsonl"),
        _line("s3://keys-refused/in/g.wav", f"{out}/{long_key}"),
    ]
    assert len(f"out/{long_key}".encode()) == 1020 > MAX_OUTPUT_KEY_BYTES
    manifest = write_jsonl(tmp_path / "refused.jsonl", lines)
    with lane(stack) as test_lane:
        validated = test_lane.cli("validate", str(manifest), timeout_s=60)
        submitted = test_lane.cli("submit", str(manifest), timeout_s=60)
    assert validated.returncode == 1
    shown = validated.stdout.splitlines()
    expected = {
        2: f"is the provenance record of the job at {manifest}:1 ({out}/a.pcm)",
        3: f"is the failure record of the job at {manifest}:1 ({out}/a.pcm)",
        4: f"lies under the work prefix of the job at {manifest}:1 ({out}/a.pcm.work/)",
        5: f"is the input of {manifest}:1",
        6: "lies under the runs prefix s3://keys-refused/sts-runs/",
        7: "the key is 1,020 bytes (UTF-8)",
    }
    for line, phrase in expected.items():
        assert any(text.startswith(f"{manifest}:{line}: output: {phrase}") for text in shown), (line, shown)
    assert shown[-1] == "7 lines, 1 valid, 6 problems in 1 file"
    assert submitted.returncode == 1 and "nothing was enqueued" in submitted.stderr
    assert f"{manifest}:2: output: is the provenance record" in " ".join(submitted.stderr.split())  # rich wraps


# --- (3) an object the pipeline did not write

def test_a_foreign_object_is_not_overwritten_unless_the_line_or_run_says_so(
        stack: LocalStack, s3: Any, offline_sts: LocalStack, clips: tuple[str, list[str]], tmp_path: Path) -> None:
    bucket, inputs = clips
    master, allowed, by_run = (f"s3://{bucket}/masters/{name}.pcm" for name in ("kept", "replaced", "by-run"))
    for uri in (master, allowed, by_run):
        s3.put_object(Bucket=bucket, Key=uri.split("/", 3)[3], Body=b"MASTER RECORDING " * 64)
    manifest = write_jsonl(tmp_path / "foreign.jsonl", [
        _line(inputs[0], master, 0), _line(inputs[1], allowed, 1, overwrite=True), _line(inputs[2], by_run, 2)])
    with lane(stack, **FAST) as test_lane:
        test_lane.start_worker(concurrency=2)
        first = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "120", timeout_s=180)
        assert first.returncode == 1, first.stderr[-3000:]  # one job did not succeed
        for uri in (master, by_run):
            record = json.loads(_get(s3, uri + ".failure.json"))
            assert record["error"]["reason"] == "output_exists"
            assert record["attempts"] == [] and record["cost"]["requests"] == 0
            assert '"overwrite": true' in record["error"]["message"]
            assert _get(s3, uri) == b"MASTER RECORDING " * 64
            assert not _exists(s3, uri + ".provenance.json")
        assert _get(s3, allowed) != b"MASTER RECORDING " * 64
        assert _exists(s3, allowed + ".provenance.json")
        rerun = write_jsonl(tmp_path / "foreign-again.jsonl", [_line(inputs[2], by_run, 2)])
        second = test_lane.cli("submit", str(rerun), "--overwrite", "--wait", "--timeout", "120", timeout_s=180)
        assert second.returncode == 0, second.stderr[-3000:]
    assert _get(s3, by_run) != b"MASTER RECORDING " * 64
    assert not _exists(s3, by_run + ".failure.json")  # the success removed the failure record
    assert _get(s3, master) == b"MASTER RECORDING " * 64


# --- (5) a broker that may evict keys

@pytest.fixture
def evicting_broker(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 20, proc)
        with redis.Redis(host="127.0.0.1", port=port) as client:
            client.config_set("maxmemory-policy", "allkeys-lru")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_evicting_broker_is_refused_by_submit_and_worker(stack: LocalStack, s3: Any, offline_sts: LocalStack,
                                                            evicting_broker: str, clips: tuple[str, list[str]],
                                                            tmp_path: Path) -> None:
    bucket, inputs = clips
    manifest = write_jsonl(tmp_path / "evicting.jsonl", [_line(inputs[0], f"s3://{bucket}/out/evicting.pcm")])
    with lane(stack, STS_BROKER_URL=evicting_broker) as test_lane:
        submitted = test_lane.cli("submit", str(manifest), timeout_s=60)
        worker = test_lane.cli("worker", "-c", "1", timeout_s=60)
        for refused in (submitted, worker):
            assert refused.returncode == 2, refused.stderr[-2000:]
            assert "maxmemory-policy allkeys-lru" in refused.stderr
            assert FIX_COMMAND in refused.stderr and FIX_CONF_LINE in refused.stderr
        with redis.Redis.from_url(evicting_broker) as client:
            assert queued(client, test_lane.queue) == 0  # nothing was enqueued
            allowed = test_lane.cli("submit", str(manifest), timeout_s=60, STS_ALLOW_EVICTING_BROKER="1")
            assert allowed.returncode == 0, allowed.stderr[-2000:]
            assert queued(client, test_lane.queue) == 1
        assert "going on: STS_ALLOW_EVICTING_BROKER=1" in allowed.stderr
        assert "keeps nothing on disk" in allowed.stderr
        running = test_lane.start_worker(concurrency=1, STS_ALLOW_EVICTING_BROKER="1")
        wait_until(lambda: "ready." in running.log_path.read_text(errors="replace"), 60, "the worker to start")
        assert running.alive()


# --- (6) and (7): a 422 that echoes the key, ESC sequences, formula-shaped text

class _EchoingServer(BaseHTTPRequestHandler):
    """Answers every conversion with a 422 whose detail echoes the request's xi-api-key, with ESC sequences in the
    message, a presigned URL, and a formula as the request id."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get("xi-api-key", "")
        detail = [{"loc": ["header", "xi-api-key"], "type": "value_error", "input": key,
                   "msg": f"{ESC}invalid key {key}\x1b[0m, see https://b.s3.amazonaws.com/k?X-Amz-Signature="
                          f"{SIGNATURE}&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE"}]
        body = json.dumps({"detail": detail}).encode()
        self.send_response(422)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", '=HYPERLINK("http://evil.invalid","open")')
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


SIGNATURE = secrets.token_hex(32)


@pytest.fixture(scope="module")
def echoing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _EchoingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_echoed_key_and_hostile_text_are_neutralised_everywhere(
        stack: LocalStack, s3: Any, offline_sts: LocalStack, echoing: str, clips: tuple[str, list[str]],
        tmp_path: Path) -> None:
    bucket, inputs = clips
    api_key = f"sk_{secrets.token_hex(24)}"
    output = f"s3://{bucket}/out/echoed.pcm"
    manifest = write_jsonl(tmp_path / "=HYPERLINK(1).jsonl", [
        _line(inputs[0], output),
        {**_line(inputs[1], f"s3://{bucket}/out/never.pcm"), f"{ESC}=cmd|calc": 1, "=cmd|' /C calc'!A0": 2}])
    csv_path, html_path = tmp_path / "report.csv", tmp_path / "report.html"
    with lane(stack, STS_API_KEY=api_key, **FAST) as test_lane:
        validated = test_lane.cli("validate", str(manifest), timeout_s=60)
        worker = test_lane.start_worker(concurrency=1, STS_API_BASE_URL=echoing)
        submitted = test_lane.cli("submit", str(manifest), "--skip-invalid", "--wait", "--timeout", "120",
                                  timeout_s=180)
        assert submitted.returncode == 1, submitted.stderr[-3000:]
        reconciled = {name: test_lane.cli("reconcile", str(manifest), *args, timeout_s=120)
                      for name, args in (("table", ()), ("json", ("--json",)),
                                         ("files", ("--csv", str(csv_path), "--html", str(html_path))))}
        worker_log = worker.log_path.read_text(errors="replace")
    record = json.loads(_get(s3, output + ".failure.json"))
    assert record["status"] == "rejected" and record["error"]["reason"] == "rejected"
    texts = {"failure record": json.dumps(record), "json report": reconciled["json"].stdout,
             "csv report": csv_path.read_text(), "html report": html_path.read_text(),
             "table": reconciled["table"].stdout + reconciled["table"].stderr, "worker log": worker_log,
             "submit": submitted.stdout + submitted.stderr, "validate": validated.stdout + validated.stderr}
    hits = SecretScanner({"api_key": api_key, "url_signature": SIGNATURE}).scan_texts(texts)
    assert not hits, [str(hit) for hit in hits]
    assert "AKIAIOSFODNN7EXAMPLE" not in texts["failure record"]
    assert "invalid key ***" in texts["failure record"]
    for name in ("table", "worker log", "submit", "validate"):
        assert "\x1b" not in texts[name], name
    assert "\\x1b[2J\\x1b[31m=cmd|calc: unknown field" in validated.stdout
    assert "\\x1b[2J\\x1b[31minvalid key ***" in worker_log, [ln for ln in worker_log.splitlines() if "job" in ln][-5:]
    rows = list(csv.DictReader(io.StringIO(texts["csv report"])))
    rejected = next(row for row in rows if row["state"] == "rejected")
    assert rejected["shard"] == "'=HYPERLINK(1).jsonl"
    assert rejected["request_id"] == "'=HYPERLINK(\"http://evil.invalid\",\"open\")"
    invalid = {row["reason"] for row in rows if row["state"] == "invalid"}
    assert "'=cmd|' /C calc'!A0" in invalid
    assert all(not value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values())
