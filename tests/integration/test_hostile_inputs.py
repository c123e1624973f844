"""Hostile inputs on the worker path: bad files, bad buckets and API refusals beside good lines, in one run.

One manifest holds every case plus a few good lines and goes through one worker once (module fixture); each test then
checks one line's outcome: its state, its failure record (status, error.reason, a key phrase of the message) or its
converted output. The offline server is this module's own, so its request counters show what each case spent.
Beside it, 30 jobs with a wrong API key through another worker check that a 401 stops a run after a handful of
requests.

Malformed manifests are ``tests/test_manifest_hostile.py``; here every line is valid and the trouble is in what it
points at.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf

from pipeline.local.services import LocalStack
from pipeline.manifest.job import Job
from pipeline.run.state import RunState
from tests.support import VOICES, decoded_seconds, lane, write_input, write_jsonl

TAG = uuid.uuid4().hex[:8]
IN, OUT = f"hostile-in-{TAG}", f"hostile-out-{TAG}"
OTHER = f"hostile-other-{TAG}"  # exists and holds a good input, but is in neither allow-list
GONE, VOID = f"hostile-gone-{TAG}", f"hostile-void-{TAG}"  # allowed (input, output) but never created
RIGHT_KEY = f"right-key-{TAG}"
UNKNOWN_VOICE = "Zq9XvT4mWcR2LpB7sNa0"  # shaped like a voice id; the server has no such voice
SERVER_MAX_INPUT_S = 4  # the offline server answers 400 audio_too_long above this (the vendor's contract)
MAX_INPUT_BYTES = 1_000_000  # the worker's STS_MAX_INPUT_BYTES
MAX_INPUT_S = 3600  # the worker's STS_MAX_INPUT_SECONDS
#: the workers' own checks are what this module tests, so submit does not ask the account first (the preflight, which
#: would refuse the unknown voice and the wrong key before anything is enqueued, is tested in test_preflight_and_quota)
FAST = {"STS_BACKOFF_BASE_S": "0.1", "STS_BACKOFF_MAX_S": "0.5", "STS_MAX_ATTEMPTS": "3", "STS_PREFLIGHT": "0"}
WORKER_LIMITS = {"STS_ALLOWED_INPUT_BUCKETS": f"{IN},{GONE}", "STS_ALLOWED_OUTPUT_BUCKETS": f"{OUT},{VOID}",
                 "STS_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES), "STS_MAX_INPUT_SECONDS": str(MAX_INPUT_S)}

#: lines refused by the worker before any request: name, error.reason, a phrase of the message
REFUSED = (
    ("missing_object", "missing_input", "does not exist"),
    ("missing_bucket", "missing_bucket", "does not exist"),
    ("zero_bytes", "empty_input", "is empty (0 bytes)"),
    ("text_named_wav", "not_audio", "ffprobe cannot read it"),
    ("png_image", "not_audio", "ffprobe found no audio stream (it looks like png_pipe)"),
    ("random_bytes_named_mp3", "not_audio", "ffprobe cannot read it"),
    ("mp3_cut_mid_frame", "corrupt_audio", "is cut off: its header promises 2.09 s but only 0.97 s decode"),
    ("mp3_cut_to_a_tenth", "corrupt_audio", "is cut off: its header promises 2.09 s but only 0.07 s decode"),
    ("ten_hours_of_silence", "too_long", "is 36000.0 s long, over the limit of 3600 s"),
    ("over_the_size_limit", "too_large", f"over STS_MAX_INPUT_BYTES={MAX_INPUT_BYTES}"),
    ("raw_pcm_with_an_odd_byte", "corrupt_audio", "has an odd number of bytes"),
    ("input_bucket_not_allowed", "input_bucket_not_allowed", "is not in STS_ALLOWED_INPUT_BUCKETS"),
)
#: lines that look hostile but are fine: converted
CONVERTED = ("good_wav", "good_mp3", "six_channels", "mp3_named_wav", "wav_declared_raw_pcm",
             "unicode_key_with_spaces")
#: lines that reach the server: everything converted, plus the too-long one (400) and the 404 (a missing output
#: bucket is found first)
REQUESTS = {"200": len(CONVERTED), "400": 1, "404": 1}
WRONG_KEY_JOBS = 30
WRONG_KEY_INPUT = "in/wrong-key-clip.wav"
MP3_FRAME_SYNC = b"\xff\xf3"  # the first bytes of an MPEG-2 layer III frame header without CRC


def _png() -> bytes:
    """A valid 2x2 RGB PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = b"".join(b"\x00" + b"\xff\x80\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def _ten_hours_of_silence(path: Path) -> Path:
    """36,000 s of digital silence as FLAC: 65,535-sample frames of a constant compress to about 70 KB."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:n=65535",
                    "-t", "36000", "-c:a", "flac", "-frame_size", "65535", "-compression_level", "0", str(path)],
                   check=True)
    return path


def _six_channels(path: Path, seconds: float) -> Path:
    mono = write_input(path.with_suffix(".mono.wav"), seconds, seed=6)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mono), "-filter_complex",
                    "[0]asplit=6[a][b][c][d][e][f];[a][b][c][d][e][f]amerge=inputs=6", "-c:a", "pcm_s16le",
                    str(path)], check=True)
    return path


def _inputs(tmp: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (input key, bytes) for every case whose object exists."""
    mp3 = write_input(tmp / "speech.mp3", 2.0, seed=3).read_bytes()  # 16 kHz MPEG-2 layer III: 108-byte frames
    mid_frame = mp3.index(MP3_FRAME_SYNC, len(mp3) // 2) + 54
    big = np.zeros(int(1.2 * MAX_INPUT_BYTES / 2), dtype=np.int16)
    sf.write(tmp / "big.wav", big, 16000)
    return {
        "good_wav": ("in/good.wav", write_input(tmp / "good.wav", 1.5, seed=1).read_bytes()),
        "good_mp3": ("in/good.mp3", write_input(tmp / "good.mp3", 1.2, seed=2).read_bytes()),
        "zero_bytes": ("in/empty.wav", b""),
        "text_named_wav": ("in/notes.wav", b"these are meeting notes, not a recording\n" * 40),
        "png_image": ("in/cover.png", _png()),
        "random_bytes_named_mp3": ("in/garbage.mp3", random.Random(7).randbytes(20_000)),
        "mp3_cut_mid_frame": ("in/cut-mid-frame.mp3", mp3[:mid_frame]),
        "mp3_cut_to_a_tenth": ("in/cut-tenth.mp3", mp3[: len(mp3) // 10]),
        "ten_hours_of_silence": ("in/ten-hours.flac", _ten_hours_of_silence(tmp / "ten-hours.flac").read_bytes()),
        "over_the_size_limit": ("in/big.wav", (tmp / "big.wav").read_bytes()),
        "raw_pcm_with_an_odd_byte": ("in/odd.pcm", b"\x10\x00" * 8000 + b"\x01"),
        "six_channels": ("in/six.wav", _six_channels(tmp / "six.wav", 1.5).read_bytes()),
        "mp3_named_wav": ("in/lies.wav", mp3),
        "wav_declared_raw_pcm": ("in/declared-raw.wav", write_input(tmp / "raw.wav", 1.0, seed=5).read_bytes()),
        "unicode_key_with_spaces": ("in/Ünïcødé name #1 (final).wav",
                                    write_input(tmp / "uni.wav", 1.0, seed=8).read_bytes()),
        "rejected_by_the_api": ("in/too-long-for-the-api.wav",
                                write_input(tmp / "long.wav", SERVER_MAX_INPUT_S + 1, seed=9).read_bytes()),
        "unknown_voice": ("in/for-unknown-voice.wav", write_input(tmp / "v.wav", 1.0, seed=10).read_bytes()),
        "missing_output_bucket": ("in/no-output-bucket.wav", write_input(tmp / "nob.wav", 1.0, seed=11).read_bytes()),
    }


def _line(name: str, key: str, *, bucket: str = IN, **fields: Any) -> dict[str, Any]:
    return {"input": f"s3://{bucket}/{key}", "voice_id": VOICES[0], "output_format": "pcm_16000",
            "output": f"s3://{OUT}/out/{name}.pcm", "id": name, **fields}


def _manifest(inputs: dict[str, tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    lines = {name: _line(name, key) for name, (key, _) in inputs.items()}
    lines["six_channels"]["output_format"] = "mp3_22050_32"
    lines["six_channels"]["output"] = f"s3://{OUT}/out/six_channels.mp3"
    lines["raw_pcm_with_an_odd_byte"]["file_format"] = "pcm_s16le_16"
    lines["wav_declared_raw_pcm"]["file_format"] = "pcm_s16le_16"
    lines["unknown_voice"]["voice_id"] = UNKNOWN_VOICE
    lines["missing_output_bucket"]["output"] = f"s3://{VOID}/out/missing_output_bucket.pcm"
    lines["missing_object"] = _line("missing_object", "in/never-uploaded.wav")
    lines["missing_bucket"] = _line("missing_bucket", "in/good.wav", bucket=GONE)
    lines["input_bucket_not_allowed"] = _line("input_bucket_not_allowed", "in/good.wav", bucket=OTHER)
    lines["output_bucket_not_allowed"] = {**_line("output_bucket_not_allowed", "in/good.wav"),
                                          "output": f"s3://{OTHER}/out/output_bucket_not_allowed.pcm"}
    return lines


@dataclass
class HostileRun:
    """What the module's two runs left behind: the hostile manifest's, and the wrong key's beside it."""

    lines: dict[str, dict[str, Any]]
    submitted: subprocess.CompletedProcess[str]
    states: dict[str, str]  # name -> job state in Redis
    stats: dict[str, Any]  # the offline server's counters after both runs
    s3_log: str  # the S3 server's access log
    worker_log: str  # the hostile run's worker
    tmp: Path
    wrong_key_submitted: subprocess.CompletedProcess[str]
    wrong_key_halted: str | None
    wrong_key_records: list[dict[str, Any]]

    def record(self, s3: Any, name: str, suffix: str) -> dict[str, Any]:
        return _get_json(s3, self.lines[name]["output"] + suffix)

    def requests(self, status: str) -> int:
        return int(self.stats["requests_by_status"].get(status, 0))


def _get_json(s3: Any, uri: str) -> dict[str, Any]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's offline server: it accepts only RIGHT_KEY and answers 400 audio_too_long above
    SERVER_MAX_INPUT_S."""
    with LocalStack(workdir=tmp_path_factory.mktemp("hostile-sts")) as own:
        own.start_sts("--api-key", RIGHT_KEY, "--max-input-seconds", str(SERVER_MAX_INPUT_S))
        yield own.sts_url


@pytest.fixture(scope="module")
def hostile(stack: LocalStack, s3: Any, server: str, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    """The hostile manifest through one worker, and beside it 30 jobs with a wrong key through another.

    The wrong key only ever gets 401s and the right one never does, so the server's counts by status tell the two
    runs apart.
    """
    tmp = tmp_path_factory.mktemp("hostile")
    with lane(stack, STS_API_BASE_URL=server, STS_API_KEY=RIGHT_KEY, **FAST) as hostile_lane, \
            lane(stack, STS_API_BASE_URL=server, STS_API_KEY=f"wrong-key-{TAG}", **FAST) as wrong_lane:
        hostile_lane.start_worker(concurrency=2, **WORKER_LIMITS)  # the workers boot while the inputs are made
        wrong_lane.start_worker(concurrency=2)
        for bucket in (IN, OUT, OTHER):
            s3.create_bucket(Bucket=bucket)
        inputs = _inputs(tmp)
        for key, data in inputs.values():
            s3.put_object(Bucket=IN, Key=key, Body=data)
        s3.put_object(Bucket=OTHER, Key="in/good.wav", Body=inputs["good_wav"][1])
        s3.put_object(Bucket=IN, Key=WRONG_KEY_INPUT, Body=inputs["good_wav"][1])
        lines = _manifest(inputs)
        manifest = write_jsonl(tmp / "hostile.jsonl", list(lines.values()))
        wrong_key_outputs = [f"s3://{OUT}/wrong-key/{n}.pcm" for n in range(WRONG_KEY_JOBS)]
        wrong_key_manifest = write_jsonl(tmp / "wrong-key.jsonl", [
            {"input": f"s3://{IN}/{WRONG_KEY_INPUT}", "voice_id": VOICES[n % len(VOICES)], "output_format": "pcm_16000",
             "output": output} for n, output in enumerate(wrong_key_outputs)])
        httpx.post(f"{server}/_admin/reset", timeout=5)
        with ThreadPoolExecutor(2) as pool:
            # the submitter has no allow-lists, so the worker's own checks are what refuses the bucket cases
            hostile_run = pool.submit(hostile_lane.cli, "submit", str(manifest), "--wait", "--timeout", "150",
                                      timeout_s=200)
            wrong_key_run = pool.submit(wrong_lane.cli, "submit", str(wrong_key_manifest), "--wait", "--timeout",
                                        "150", timeout_s=200)
            submitted, wrong_key_submitted = hostile_run.result(), wrong_key_run.result()
    with redis.Redis.from_url(stack.redis_url) as client:
        by_id = {k.decode(): v.decode()
                 for k, v in client.hgetall(f"sts:run:{submitted.stdout.strip()}:jobs").items()}
        halted = RunState(client, wrong_key_submitted.stdout.strip()).halted()
    return HostileRun(
        lines=lines, submitted=submitted,
        states={name: by_id.get(Job.model_validate(line).job_id(), "missing") for name, line in lines.items()},
        stats=httpx.get(f"{server}/_admin/stats", timeout=5).json(),
        s3_log=(stack.workdir / "s3.log").read_text(errors="replace"),
        worker_log=hostile_lane.workers[0].log_path.read_text(errors="replace"), tmp=tmp,
        wrong_key_submitted=wrong_key_submitted, wrong_key_halted=halted,
        wrong_key_records=[_get_json(s3, output + ".failure.json") for output in wrong_key_outputs])


def _s3_reads(run: HostileRun, bucket: str, key: str) -> list[str]:
    """The S3 access-log lines that read (GET/HEAD) ``bucket/key``."""
    path = f"/{bucket}/{key}"
    return [line for line in run.s3_log.splitlines()
            if f" {path} " in line and ('"GET ' in line or '"HEAD ' in line)]


# --- the run as a whole
def test_the_run_finishes_and_reports_the_failures(hostile: HostileRun) -> None:
    result = hostile.submitted
    assert result.returncode == 1, result.stderr[-3000:]
    expected = {"succeeded": len(CONVERTED), "rejected": 1, "failed": len(hostile.lines) - len(CONVERTED) - 1}
    assert Counter(hostile.states.values()) == expected, hostile.states


def test_the_server_saw_only_the_lines_that_should_reach_it(hostile: HostileRun) -> None:
    assert {status: hostile.requests(status) for status in REQUESTS} == REQUESTS
    assert hostile.stats["requests_total"] == sum(REQUESTS.values()) + hostile.requests("401")


# --- refused before any request
@pytest.mark.parametrize(("name", "reason", "phrase"), REFUSED, ids=[case[0] for case in REFUSED])
def test_refused_before_spending(hostile: HostileRun, s3: Any, name: str, reason: str, phrase: str) -> None:
    assert hostile.states[name] == "failed"
    record = hostile.record(s3, name, ".failure.json")
    assert record["status"] == "failed"
    assert record["error"]["error_class"] == "InputError"
    assert record["error"]["reason"] == reason
    assert phrase in record["error"]["message"]
    assert name == "input_bucket_not_allowed" or hostile.lines[name]["input"] in record["error"]["message"]
    assert record["attempts"] == [] and record["cost"] == {"credits": 0, "requests": 0}
    assert record["line"] == list(hostile.lines).index(name) + 1


def test_an_input_over_the_size_limit_is_not_downloaded(hostile: HostileRun) -> None:
    # one GET, refused on its Content-Length and closed before the body is read (Storage.download's bound; the
    # same bound stops a body that runs past a Content-Length that lied)
    reads = _s3_reads(hostile, IN, "in/big.wav")
    assert len(reads) == 1 and '"GET ' in reads[0], reads


def test_an_input_bucket_not_allowed_is_never_read(hostile: HostileRun) -> None:
    assert _s3_reads(hostile, OTHER, "in/good.wav") == []


def test_an_output_bucket_not_allowed_gets_nothing_written(hostile: HostileRun, s3: Any) -> None:
    assert hostile.states["output_bucket_not_allowed"] == "failed"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=OTHER).get("Contents", [])] == ["in/good.wav"]
    assert _s3_reads(hostile, IN, "in/good.wav")  # the good line beside it did read the same input
    assert f"output bucket '{OTHER}' is not in STS_ALLOWED_OUTPUT_BUCKETS" in hostile.worker_log


def test_a_missing_output_bucket_fails_the_job_before_spending(hostile: HostileRun) -> None:
    assert hostile.states["missing_output_bucket"] == "failed"
    assert f"output bucket '{VOID}' does not exist" in hostile.worker_log


# --- refused by the API
def test_audio_too_long_for_the_api_is_rejected_after_one_request(hostile: HostileRun, s3: Any) -> None:
    # the vendor files a too-long input as 400 audio_too_long (not 422): rejected, never retried, the limit named
    assert hostile.states["rejected_by_the_api"] == "rejected"
    record = hostile.record(s3, "rejected_by_the_api", ".failure.json")
    assert record["status"] == "rejected"
    assert record["error"]["reason"] == "audio_too_long" and record["error"]["status"] == 400
    assert "refused the input as too long (400 audio_too_long)" in record["error"]["message"]
    assert record["error"]["detail"]["param"] == "audio"
    assert [a["status"] for a in record["attempts"]] == [400]


def test_an_unknown_voice_fails_with_http_404_after_one_request(hostile: HostileRun, s3: Any) -> None:
    assert hostile.states["unknown_voice"] == "failed"
    record = hostile.record(s3, "unknown_voice", ".failure.json")
    assert record["status"] == "failed"
    assert record["error"]["error_class"] == "ApiError"
    assert record["error"]["reason"] == "http_404" and record["error"]["api_status"] == "voice_not_found"
    assert f"the voice_id {UNKNOWN_VOICE} was not found" in record["error"]["message"]
    assert [a["status"] for a in record["attempts"]] == [404]
    assert hostile.stats["requests_by_voice"][UNKNOWN_VOICE] == 1


# --- converted
@pytest.mark.parametrize("name", CONVERTED)
def test_converted_with_the_input_duration(hostile: HostileRun, s3: Any, name: str) -> None:
    assert hostile.states[name] == "succeeded"
    record = hostile.record(s3, name, ".provenance.json")
    assert record["status"] == "succeeded" and record["attempts"][-1]["outcome"] == "ok"
    output = hostile.lines[name]["output"]
    local = hostile.tmp / f"{name}.out"
    s3.download_file(OUT, output.removeprefix(f"s3://{OUT}/"), str(local))
    decoded = decoded_seconds(local, hostile.lines[name]["output_format"])
    assert abs(decoded - record["input"]["duration_s"]) < 0.1, (decoded, record["input"])


def test_six_channels_come_out_mono(hostile: HostileRun, s3: Any) -> None:
    record = hostile.record(s3, "six_channels", ".provenance.json")
    assert record["input"]["channels"] == 6
    local = hostile.tmp / "six_channels.out.mp3"
    s3.download_file(OUT, "out/six_channels.mp3", str(local))
    channels = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                               "stream=channels", "-of", "csv=p=0", str(local)],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert channels == "1"
    assert abs(record["output"]["duration_s"] - 1.5) < 0.1


def test_a_lying_extension_is_read_by_content(hostile: HostileRun, s3: Any) -> None:
    assert hostile.record(s3, "mp3_named_wav", ".provenance.json")["input"]["codec"] == "mp3"
    assert hostile.record(s3, "wav_declared_raw_pcm", ".provenance.json")["input"]["format_name"] == "wav"


# --- a wrong API key
def test_a_refused_api_key_stops_the_run_after_a_handful_of_requests(hostile: HostileRun) -> None:
    assert hostile.wrong_key_submitted.returncode == 1, hostile.wrong_key_submitted.stderr[-3000:]
    assert 1 <= hostile.requests("401") <= 4, hostile.stats
    assert hostile.wrong_key_halted is not None
    assert hostile.wrong_key_halted.startswith("the service refused the API key (401)")
    downloads = [line for line in _s3_reads(hostile, IN, WRONG_KEY_INPUT) if '"GET ' in line]
    assert 1 <= len(downloads) <= 4  # jobs taken after the halt stop before downloading
    records = hostile.wrong_key_records
    assert {(r["status"], r["error"]["reason"], r["error"]["status"]) for r in records} == {("failed", "http_401", 401)}
    assert sum(len(r["attempts"]) for r in records) == hostile.requests("401")
    refused = [r["error"]["message"] for r in records if r["attempts"]]
    stopped = [r["error"]["message"] for r in records if not r["attempts"]]
    assert all(message.startswith("the service refused the API key (401)") for message in refused)
    assert len(stopped) >= WRONG_KEY_JOBS - 4
    assert all(message.startswith("the run was stopped before this") for message in stopped)
