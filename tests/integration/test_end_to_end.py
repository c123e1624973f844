"""Manifest → submit → a real Celery worker → the offline STS server → S3 outputs with complete provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.local.services import LocalStack
from tests.support import VOICES, decoded_seconds, lane, write_input, write_jsonl

FORMATS = ("mp3_44100_128", "pcm_16000", "opus_48000_64", "pcm_24000", "ulaw_8000", "mp3_22050_32", "alaw_8000",
           "pcm_44100", "opus_48000_32", "mp3_44100_64")
SUFFIXES = (".wav", ".flac", ".mp3", ".pcm")

PROVENANCE_FIELDS = {"schema", "schema_version", "status", "job_id", "run_id", "shard", "line", "input", "request",
                     "attempts", "output", "quality", "cost", "timings", "worker"}


@pytest.fixture(scope="module")
def converted(offline_sts: LocalStack, s3, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """20 jobs of mixed input formats, voices and output formats, run to the end once for the module's tests."""
    tmp = tmp_path_factory.mktemp("e2e")
    s3.create_bucket(Bucket="e2e-in")
    s3.create_bucket(Bucket="e2e-out")
    lines, durations = [], {}
    for n in range(20):
        suffix = SUFFIXES[n % len(SUFFIXES)]
        seconds = 1.5 + (n % 5) * 0.6
        source = write_input(tmp / f"in-{n}{suffix}", seconds, seed=n)
        s3.upload_file(str(source), "e2e-in", f"clips/in-{n}{suffix}")
        output_format = FORMATS[n % len(FORMATS)]
        line = {"input": f"s3://e2e-in/clips/in-{n}{suffix}", "voice_id": VOICES[n % len(VOICES)],
                "output_format": output_format, "seed": n, "metadata": {"n": n},
                "output": f"s3://e2e-out/converted/out-{n}.{output_format.split('_')[0]}"}
        if suffix == ".pcm" or n % 7 == 0:
            line["file_format"] = "pcm_s16le_16"
        if n % 5 == 1:
            line["voice_settings"] = {"stability": 0.3, "style": 0.4}
        lines.append(line)
        durations[line["output"]] = (seconds, output_format)
    manifest = write_jsonl(tmp / "shard-a.jsonl", lines)
    with lane(offline_sts) as test_lane:
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "240", "--run-id", "e2e-run-1")
        again = test_lane.cli("submit", str(manifest), "--run-id", "e2e-run-2")
        logs = "".join(w.log_path.read_text() for w in test_lane.workers)
    return {"tmp": tmp, "lines": lines, "durations": durations, "submitted": submitted, "again": again,
            "api_key": test_lane.api_key, "logs": logs}


def test_submit_waits_and_succeeds(converted) -> None:  # type: ignore[no-untyped-def]
    result = converted["submitted"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "e2e-run-1"
    assert "20 jobs, 20 enqueued, 0 already done" in result.stderr


def test_every_output_decodes_with_the_input_duration(converted, s3) -> None:  # type: ignore[no-untyped-def]
    tmp: Path = converted["tmp"]
    off = {}
    for uri, (seconds, output_format) in converted["durations"].items():
        key = uri.removeprefix("s3://e2e-out/")
        local = tmp / key.replace("/", "_")
        s3.download_file("e2e-out", key, str(local))
        decoded = decoded_seconds(local, output_format)
        if abs(decoded - seconds) > 0.05:
            off[uri] = (output_format, seconds, round(decoded, 4))
    assert not off


def test_every_provenance_record_is_complete(converted, s3) -> None:  # type: ignore[no-untyped-def]
    for line_no, line in enumerate(converted["lines"], start=1):
        key = line["output"].removeprefix("s3://e2e-out/") + ".provenance.json"
        body = s3.get_object(Bucket="e2e-out", Key=key)["Body"].read().decode()
        record = json.loads(body)
        assert PROVENANCE_FIELDS <= set(record), PROVENANCE_FIELDS - set(record)
        assert record["status"] == "succeeded"
        assert record["shard"] == "shard-a.jsonl" and record["line"] == line_no
        assert record["metadata"] == line["metadata"]
        assert record["input"]["uri"] == line["input"] and len(record["input"]["sha256"]) == 64
        assert record["input"]["duration_s"] > 1.0
        assert record["request"]["params"]["voice_id"] == line["voice_id"]
        assert record["request"]["params"]["seed"] == line["seed"]
        assert record["output"]["output_format"] == line["output_format"]
        assert len(record["output"]["sha256"]) == 64 and record["output"]["size_bytes"] > 0
        assert record["attempts"] and record["attempts"][-1]["outcome"] == "ok"
        assert record["attempts"][-1]["request_id"] in record["request_ids"]
        assert record["cost"]["credits"] > 0
        assert {"download_s", "prepare_s", "convert_s", "upload_s", "queued_at"} <= set(record["timings"])
        assert record["worker"]["host"] and record["worker"]["package_version"]
        assert converted["api_key"] not in body


def test_resubmitting_the_manifest_enqueues_nothing(converted) -> None:  # type: ignore[no-untyped-def]
    again = converted["again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "20 jobs, 0 enqueued, 20 already done" in again.stderr


def test_the_api_key_is_not_in_worker_logs(converted) -> None:  # type: ignore[no-untyped-def]
    assert converted["api_key"] not in converted["logs"]
    assert "succeeded" in converted["logs"] or "Task sts.convert" in converted["logs"]
