"""Webhook notifications with real processes: signed events, exactly one ``run.finished`` for a run two workers
finish, and a receiver that is gone changes no job's outcome."""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.local.services import LocalStack, free_port
from pipeline.run.notify import SIGNATURE_HEADER, sign
from tests.support import VOICES, lane, wait_until, write_input, write_jsonl

SECRET = "notify-secret-for-tests"
JOBS = 8


class Receiver:
    """A local webhook receiver that keeps every event and whether its signature was valid."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict, bool]] = []  # type: ignore[type-arg]
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), sign(body, SECRET))
                events.append((self.headers["X-STS-Event"], json.loads(body), valid))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()
    yield got
    got.server.shutdown()


def _manifest(s3, tmp: Path, bucket: str) -> Path:  # type: ignore[no-untyped-def]
    source = write_input(tmp / "in.wav", 1.0, seed=4)
    lines = []
    for i in range(JOBS):
        s3.upload_file(str(source), bucket, f"in/n{i}.wav")
        lines.append({"input": f"s3://{bucket}/in/n{i}.wav", "voice_id": VOICES[i % 4], "output_format": "pcm_16000",
                      "output": f"s3://{bucket}/out/n{i}.pcm"})
    return write_jsonl(tmp / "notify.jsonl", lines)


def test_two_workers_send_exactly_one_signed_run_finished(offline_sts: LocalStack, s3, bucket: str,
                                                          tmp_path: Path, receiver: Receiver) -> None:
    manifest = _manifest(s3, tmp_path, bucket)
    with lane(offline_sts, STS_NOTIFY_SECRET=SECRET, STS_RUNS_URI=f"s3://{bucket}/runs") as test_lane:
        test_lane.start_worker(concurrency=1)
        test_lane.start_worker(concurrency=1)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "notify-run", "--notify", receiver.url,
                                  "--notify-interval", "1", "--wait", "--timeout", "120")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: "run.finished" in receiver.names(), 60, "run.finished")
        api_key = test_lane.api_key
    names = receiver.names()
    assert names[0] == "run.started" and names.count("run.finished") == 1, names
    assert all(valid for _, _, valid in receiver.events)
    [finished] = [body for name, body, _ in receiver.events if name == "run.finished"]
    assert finished["counts"] == {"succeeded": JOBS} and finished["results"].endswith("/notify-run/results.jsonl")
    everything = json.dumps([body for _, body, _ in receiver.events])
    assert api_key not in everything and SECRET not in everything and "X-Amz-Signature" not in everything


def test_a_receiver_that_is_gone_changes_no_outcome(offline_sts: LocalStack, s3, bucket: str,
                                                   tmp_path: Path) -> None:
    manifest = _manifest(s3, tmp_path, bucket)
    gone = f"http://127.0.0.1:{free_port()}/hook"
    with lane(offline_sts, STS_NOTIFY_SECRET=SECRET, STS_NOTIFY_URL=gone) as test_lane:
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", str(manifest), "--run-id", "notify-gone", "--notify-interval", "1",
                                  "--wait", "--timeout", "120")
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        wait_until(lambda: "not delivered" in "".join(w.log_path.read_text() for w in test_lane.workers), 30,
                   "the worker's one line about the receiver")
