"""Hostile inputs for the decoder, through a real worker: playlists that name a file on the worker's disk or a URL,
a concat list, and a FLAC whose header lies about its length, beside one good line, in one run.

The run goes through this module's own offline server (its counters are the requests each line cost) and a loopback
HTTP server that counts what reaches it (a URL in a playlist must never be fetched). Each hostile line must end
``failed`` with its reason before any request, with no output object and nothing of the local file anywhere in the
output bucket; the good line shows that the same worker converts, with the counted length and the header's claim in
its provenance; and no ffmpeg/ffprobe process is left in the worker's process tree.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.local.services import LocalStack
from pipeline.manifest.job import Job
from tests.audio.helpers import CountingServer, lying_flac
from tests.support import VOICES, lane, write_input, write_jsonl

TAG = uuid.uuid4().hex[:8]
IN, OUT = f"decoder-in-{TAG}", f"decoder-out-{TAG}"
MAX_INPUT_S = 30  # the worker's STS_MAX_INPUT_SECONDS
SECRET_TEXT = f"SECRET-{TAG}"
FAST = {"STS_BACKOFF_BASE_S": "0.1", "STS_BACKOFF_MAX_S": "0.5", "STS_MAX_ATTEMPTS": "2"}
#: name -> (voice, error.reason, a phrase of the message); each hostile line has a voice of its own, so the server's
#: counts by voice show what it cost
HOSTILE = {
    "hls_local_file": (VOICES[1], "not_audio", "is a playlist or a list of other inputs (hls)"),
    "hls_url": (VOICES[2], "not_audio", "is a playlist or a list of other inputs (hls)"),
    "ffconcat_local_file": (VOICES[3], "not_audio", "is a playlist or a list of other inputs (concat)"),
    "flac_header_says_2_s_holds_90_s": (VOICES[3], "too_long", "decoding was stopped at 31.0 s; its header claims "
                                                                "2.0 s"),
}


@dataclass
class DecoderRun:
    lines: dict[str, dict[str, Any]]
    submitted: Any
    states: dict[str, str]
    stats: dict[str, Any]
    fetched: list[str]  # paths the loopback HTTP server was asked for
    secret: bytes
    media_left: list[str]  # ffmpeg/ffprobe processes in the worker's tree after the run
    worker_log: str


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, name) of every process below ``root``."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            parents.setdefault(ppid, []).append((int(entry.name), text[text.index("(") + 1:text.rindex(")")]))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _media_below(root: int, *, within_s: float) -> list[str]:
    """ffmpeg/ffprobe processes below ``root`` that are still there after up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        left = [f"{pid} {name}" for pid, name in _descendants(root) if name in ("ffmpeg", "ffprobe")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalStack(workdir=tmp_path_factory.mktemp("decoder-sts")) as own:
        own.start_sts()
        yield own.sts_url


@pytest.fixture(scope="module")
def run(stack: LocalStack, s3: Any, server: str, tmp_path_factory: pytest.TempPathFactory) -> DecoderRun:
    tmp = tmp_path_factory.mktemp("decoder")
    (tmp / "private").mkdir()
    secret = write_input(tmp / "private" / "recording.mp3", 2.0, seed=42)
    marker = tmp / "private" / "notes.txt"  # a file on the worker's disk a concat list could name as well
    marker.write_text(SECRET_TEXT)
    with CountingServer() as http_server, lane(stack, STS_API_BASE_URL=server, **FAST) as decoder_lane:
        worker = decoder_lane.start_worker(concurrency=2, STS_MAX_INPUT_SECONDS=str(MAX_INPUT_S))
        for bucket in (IN, OUT):
            s3.create_bucket(Bucket=bucket)
        inputs = {
            "hls_local_file": ("in/episode.mp3", f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n"
                                                 f"#EXT-X-ENDLIST\n".encode()),
            "hls_url": ("in/feed.wav", f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{http_server.url}/seg.mp3\n"
                                       f"#EXT-X-ENDLIST\n".encode()),
            "ffconcat_local_file": ("in/list.flac", f"ffconcat version 1.0\nfile '{secret}'\nfile '{marker}'\n"
                                    .encode()),
            "flac_header_says_2_s_holds_90_s": (
                "in/liar.flac", lying_flac(tmp / "liar.flac", actual_s=90.0, claimed_s=2.0).read_bytes()),
            "good_wav": ("in/good.wav", write_input(tmp / "good.wav", 1.5, seed=1).read_bytes()),
        }
        for key, data in inputs.values():
            s3.put_object(Bucket=IN, Key=key, Body=data)
        lines = {name: {"input": f"s3://{IN}/{key}", "voice_id": HOSTILE.get(name, (VOICES[0],))[0],
                        "output_format": "mp3_22050_32", "output": f"s3://{OUT}/out/{name}.mp3", "id": name}
                 for name, (key, _) in inputs.items()}
        manifest = write_jsonl(tmp / "decoder.jsonl", list(lines.values()))
        httpx.post(f"{server}/_admin/reset", timeout=5)
        submitted = decoder_lane.cli("submit", str(manifest), "--wait", "--timeout", "150", timeout_s=200)
        fetched = list(http_server.requests)
        media_left = _media_below(worker.pid, within_s=10)
        worker_log = worker.log_path.read_text(errors="replace")
    with redis.Redis.from_url(stack.redis_url) as client:
        by_id = {k.decode(): v.decode()
                 for k, v in client.hgetall(f"sts:run:{submitted.stdout.strip()}:jobs").items()}
    return DecoderRun(lines=lines, submitted=submitted,
                      states={name: by_id.get(Job.model_validate(line).job_id(), "missing")
                              for name, line in lines.items()},
                      stats=httpx.get(f"{server}/_admin/stats", timeout=5).json(), fetched=fetched,
                      secret=secret.read_bytes(), media_left=media_left, worker_log=worker_log)


def _key(uri: str) -> str:
    return uri.removeprefix(f"s3://{OUT}/")


def _get_json(s3: Any, uri: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=OUT, Key=_key(uri))["Body"].read())


def test_the_run_ends_with_only_the_good_line_converted(run: DecoderRun) -> None:
    assert run.submitted.returncode == 1, run.submitted.stderr[-3000:]
    assert run.states == {**{name: "failed" for name in HOSTILE}, "good_wav": "succeeded"}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_input_fails_before_any_request_and_writes_no_output(run: DecoderRun, s3: Any, name: str) -> None:
    voice, reason, phrase = HOSTILE[name]
    record = _get_json(s3, run.lines[name]["output"] + ".failure.json")
    assert (record["status"], record["error"]["reason"]) == ("failed", reason)
    assert phrase in record["error"]["message"] and run.lines[name]["input"] in record["error"]["message"]
    assert record["attempts"] == [] and record["cost"] == {"credits": 0, "requests": 0}
    listed = s3.list_objects_v2(Bucket=OUT, Prefix=_key(run.lines[name]["output"])).get("Contents", [])
    assert [item["Key"] for item in listed] == [_key(run.lines[name]["output"]) + ".failure.json"]
    if voice != VOICES[0]:
        assert run.stats["requests_by_voice"].get(voice, 0) == 0


def test_the_server_saw_only_the_good_line_and_no_url_was_fetched(run: DecoderRun) -> None:
    assert run.stats["requests_total"] == 1 and run.stats["requests_by_voice"] == {VOICES[0]: 1}
    assert run.fetched == []


def test_nothing_of_the_local_files_is_in_any_object(run: DecoderRun, s3: Any) -> None:
    tail = run.secret[-4000:]
    for item in s3.list_objects_v2(Bucket=OUT).get("Contents", []):
        body = s3.get_object(Bucket=OUT, Key=item["Key"])["Body"].read()
        assert tail not in body and SECRET_TEXT.encode() not in body, item["Key"]
        assert b"/private/recording.mp3" not in body and b"notes.txt" not in body, item["Key"]
    assert SECRET_TEXT not in run.worker_log


def test_the_good_line_is_billed_for_its_counted_length(run: DecoderRun, s3: Any) -> None:
    record = _get_json(s3, run.lines["good_wav"]["output"] + ".provenance.json")
    assert record["input"]["duration_s"] == pytest.approx(1.5, abs=1e-6)
    assert record["input"]["header_duration_s"] == pytest.approx(1.5, abs=1e-6)


def test_no_decoder_process_is_left(run: DecoderRun) -> None:
    assert run.media_left == []
