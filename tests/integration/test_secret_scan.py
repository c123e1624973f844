"""No secret leaves the process that holds it: a run with recognisable keys, then a search of everything it left.

The run uses an API key and an AWS secret key nobody could mistake (moto accepts any credentials) on a small
manifest: good lines, a 422, a missing object, and injected 500s that force retries. Its task messages are scanned
while they wait in the queue, then, when the run is done, every Redis key, every object of every bucket, the worker's
log, the CLI's output, and the text of the exceptions the real client raises for a 401, a 422 and a network error.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rich.console import Console

from pipeline.api.client import StsClient
from pipeline.errors import PipelineError, redact, register_secret
from pipeline.local.secret_scan import Hit, SecretScanner, scan
from pipeline.local.services import LocalStack, free_port
from pipeline.manifest.job import Job
from pipeline.run.progress import wait_for_run
from tests.support import VOICES, lane, queued, write_input, write_jsonl

TOKEN = secrets.token_hex(8)
API_KEY = f"sk_SECRET_SCAN_c0ffee{TOKEN}"
WRONG_KEY = f"sk_SECRET_SCAN_wr0ng{TOKEN}"  # sent once, to get a 401
AWS_SECRET = f"AWS_SECRET_SCAN_deadbeef{TOKEN}"
SECRETS = {"api_key": API_KEY, "wrong_api_key": WRONG_KEY, "aws_secret_access_key": AWS_SECRET}
SERVER_MAX_INPUT_S = 3
GOOD = 3


@dataclass
class ScannedRun:
    """The run's outcome and what it left outside S3 and Redis (CLI output, worker logs)."""

    bucket: str
    queued_hits: list[Hit]
    queued_messages: int
    texts: dict[str, str]  # CLI output by name
    logs: list[Path]
    counts: dict[str, int]
    stats: dict[str, Any]
    worker_had_the_secrets: bool  # both were in the worker's environment: the scan looks for secrets that were used


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Accepts only API_KEY, answers 400 audio_too_long above 3 s, and fails its 1st, 2nd and 4th admitted requests
    with a 500."""
    with LocalStack(workdir=tmp_path_factory.mktemp("secret-sts")) as own:
        own.start_sts("--api-key", API_KEY, "--max-input-seconds", str(SERVER_MAX_INPUT_S), "--rate-500", "0.3",
                      "--fault-seed", "1")
        yield own.sts_url


@pytest.fixture(scope="module")
def scanned(stack: LocalStack, s3: Any, server: str, tmp_path_factory: pytest.TempPathFactory) -> ScannedRun:
    """Submit, scan the queued task messages, then start the worker and wait until every job is done."""
    tmp = tmp_path_factory.mktemp("secret-scan")
    bucket = f"secret-scan-{TOKEN}"
    s3.create_bucket(Bucket=bucket)
    sources = {"a.wav": 1.0, "b.mp3": 1.2, "c.flac": 1.0, "long.wav": SERVER_MAX_INPUT_S + 1.0}
    for name, seconds in sources.items():
        s3.upload_file(str(write_input(tmp / name, seconds)), bucket, f"in/{name}")
    lines = [{"input": f"s3://{bucket}/in/{name}", "voice_id": VOICES[n % len(VOICES)], "seed": n,
              "output_format": "pcm_16000", "output": f"s3://{bucket}/out/{name}.pcm"}
             for n, name in enumerate([*sources, "never-uploaded.wav"])]
    manifest = write_jsonl(tmp / "secret-scan.jsonl", lines)
    with lane(stack, STS_API_BASE_URL=server, STS_API_KEY=API_KEY, AWS_SECRET_ACCESS_KEY=AWS_SECRET,
              STS_BACKOFF_BASE_S="0.1", STS_BACKOFF_MAX_S="0.5", STS_PREFLIGHT="0") as test_lane, \
            redis.Redis.from_url(stack.redis_url) as client:
        submitted = test_lane.cli("submit", str(manifest))
        run_id = submitted.stdout.strip()
        queued_messages = queued(client, test_lane.queue)
        queued_hits = SecretScanner(SECRETS).scan_redis(client)  # the task messages, before a worker takes them
        worker = test_lane.start_worker(concurrency=2)
        counts = wait_for_run(client, run_id, len(lines), console=Console(file=io.StringIO()), timeout_s=120)
        environment = Path(f"/proc/{worker.pid}/environ").read_bytes()
    stats = httpx.get(f"{server}/_admin/stats", timeout=5).json()
    texts = {"submit stdout": submitted.stdout, "submit stderr": submitted.stderr}
    return ScannedRun(bucket=bucket, queued_hits=queued_hits, queued_messages=queued_messages, texts=texts,
                      logs=[w.log_path for w in test_lane.workers], counts=dict(counts), stats=stats,
                      worker_had_the_secrets=all(f"={value}".encode() in environment
                                                 for value in (API_KEY, AWS_SECRET)))


def _client_error_texts(server: str, tmp: Path) -> dict[str, str]:
    """Every text of the errors the real client raises for a 401, a 422 and a refused connection."""
    clip = write_input(tmp / "clip.wav", 1.0)
    too_long = write_input(tmp / "too-long.wav", SERVER_MAX_INPUT_S + 1.0)
    job = Job(input="s3://any-bucket/clip.wav", voice_id=VOICES[0], output_format="pcm_16000")
    cases = {"401": (server, WRONG_KEY, clip), "too long": (server, API_KEY, too_long),
             "network": (f"http://127.0.0.1:{free_port()}", API_KEY, clip)}
    texts: dict[str, str] = {}
    for name, (base_url, key, audio) in cases.items():
        with StsClient(base_url, key, connect_timeout_s=2, read_timeout_s=10) as client:
            with pytest.raises(PipelineError) as caught:
                client.stream(job, audio, tmp / f"{name}.out")
        error: PipelineError = caught.value
        texts[name] = "\n".join([str(error), repr(error), error.message,
                                 json.dumps(error.to_record(), default=str), repr(error.response),
                                 *traceback.format_exception(error)])
    return texts


def test_the_run_did_what_the_scan_relies_on(scanned: ScannedRun, s3: Any) -> None:
    assert scanned.queued_messages == GOOD + 2
    assert scanned.worker_had_the_secrets
    assert scanned.counts == {"succeeded": GOOD, "rejected": 1, "failed": 1}
    assert scanned.stats["faults_injected"].get("500", 0) >= 1
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=scanned.bucket)["Contents"]}
    assert {"out/a.wav.pcm.provenance.json", "out/long.wav.pcm.failure.json",
            "out/never-uploaded.wav.pcm.failure.json"} <= keys
    assert any(key.startswith("sts-runs/") and key.endswith("run.json") for key in keys)
    retried = [json.loads(s3.get_object(Bucket=scanned.bucket, Key=f"out/{name}.pcm.provenance.json")["Body"].read())
               for name in ("a.wav", "b.mp3", "c.flac")]
    assert any(len(record["attempts"]) > 1 for record in retried)


def test_no_secret_in_the_queued_task_messages(scanned: ScannedRun) -> None:
    assert not scanned.queued_hits, [str(hit) for hit in scanned.queued_hits]


def test_no_secret_in_redis_s3_logs_or_cli_output(scanned: ScannedRun, stack: LocalStack, s3: Any) -> None:
    with redis.Redis.from_url(stack.redis_url) as client:
        hits = scan(SECRETS, redis_client=client, s3_client=s3, paths=scanned.logs, texts=scanned.texts)
    assert not hits, [str(hit) for hit in hits]


def test_no_secret_in_the_client_errors(server: str, tmp_path: Path) -> None:
    texts = _client_error_texts(server, tmp_path)
    assert "refused the API key (401)" in texts["401"]
    assert "refused the input as too long (400 audio_too_long)" in texts["too long"]
    assert "connection to the service failed" in texts["network"]
    hits = SecretScanner(SECRETS).scan_texts(texts)
    assert not hits, [str(hit) for hit in hits]


def test_redact_removes_a_registered_key() -> None:
    register_secret(API_KEY)
    text = f"POST failed with key {API_KEY} (headers {{'xi-api-key': '{WRONG_KEY}'}})"
    assert redact(text) == "POST failed with key *** (headers {'xi-api-key': '***'})"
    assert API_KEY not in PipelineError(f"the key {API_KEY} was refused").message


def test_the_scanner_finds_a_secret_wherever_it_is_planted(stack: LocalStack, s3: Any, tmp_path: Path) -> None:
    canary = f"canary-{secrets.token_hex(12)}"
    tag = secrets.token_hex(4)
    body = base64.b64encode(json.dumps([[{"key": canary}], {}]).encode()).decode()
    message = json.dumps({"body": body, "properties": {"body_encoding": "base64"}})  # as kombu queues a task
    bucket = f"canary-{tag}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="body.json", Body=b"x" * 5 + canary.encode())
    s3.put_object(Bucket=bucket, Key=f"named-{canary}", Body=b"")
    s3.put_object(Bucket=bucket, Key="meta", Body=b"", Metadata={"note": canary})
    log = tmp_path / "logs" / "worker.log"
    log.parent.mkdir()
    log.write_text(f"line one\nkey={canary}\n")
    keys = {f"canary:{tag}:{kind}" for kind in ("string", "hash", "list", "set", "zset", "queue", "name-" + canary)}
    with redis.Redis.from_url(stack.redis_url) as client:
        client.set(f"canary:{tag}:string", canary)
        client.hset(f"canary:{tag}:hash", "delivery-tag", canary)
        client.rpush(f"canary:{tag}:list", "first", canary)
        client.sadd(f"canary:{tag}:set", canary)
        client.zadd(f"canary:{tag}:zset", {canary: 1.0})
        client.rpush(f"canary:{tag}:queue", message)
        client.set(f"canary:{tag}:name-{canary}", "x")
        try:
            hits = scan({"canary": canary}, redis_client=client, s3_client=s3, paths=[log.parent],
                        texts={"cli": f"error: {canary}"})
        finally:
            client.delete(*keys)
            for key in ("body.json", f"named-{canary}", "meta"):
                s3.delete_object(Bucket=bucket, Key=key)
            s3.delete_bucket(Bucket=bucket)
    where = {hit.where for hit in hits}
    for kind in ("string", "hash", "list", "set", "zset"):
        assert any(f"canary:{tag}:{kind}'" in place for place in where), (kind, where)
    assert any(f"canary:{tag}:queue'" in hit.where and hit.encoding == "base64" for hit in hits), where
    assert f"redis db0 key 'canary:{tag}:name-<canary>' (name)" in where
    assert {f"s3://{bucket}/body.json", f"s3://{bucket}/meta (metadata)"} <= where
    assert f"s3://{bucket}/named-<canary> (key)" in where
    assert {str(log), "cli"} <= where
    assert all(canary not in str(hit) for hit in hits)
