"""A 20-minute recording with pauses, 60 s segments, the worker killed half-way: the re-run converts only what is
missing, every cut lies in a pause, the output keeps the input's duration and no join clicks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from tests.support import VOICES, decoded_seconds, lane, sts_stats, write_jsonl

MINUTES = 20
MAX_SEGMENT_S = 60
RATE = 16000


@pytest.fixture(scope="module")
def sts(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with LocalStack(workdir=tmp_path_factory.mktemp("long-sts")) as own:
        own.start_sts("--workers", "2", "--latency-fixed", "0.5")
        yield own.sts_url


def _checkpoints(s3, bucket: str) -> int:  # type: ignore[no-untyped-def]
    return int(s3.list_objects_v2(Bucket=bucket, Prefix="out/episode.pcm.work/").get("KeyCount", 0))


def _rms(x: np.ndarray, centre: int, half: int) -> float:
    window = x[max(0, centre - half): centre + half]
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) if len(window) else 0.0


@pytest.mark.timeout(720)  # a 20-minute input converted twice over, on a shared 2-core machine
def test_a_long_recording_is_segmented_resumed_and_stitched(stack: LocalStack, s3, bucket: str, tmp_path: Path,
                                                            sts: str) -> None:
    source = write_speech_like(tmp_path / "episode.wav", MINUTES * 60, RATE, seed=11)
    s3.upload_file(str(source), bucket, "in/episode.wav")
    line = {"input": f"s3://{bucket}/in/episode.wav", "voice_id": VOICES[1], "output_format": "pcm_16000",
            "output": f"s3://{bucket}/out/episode.pcm", "max_segment_seconds": MAX_SEGMENT_S}
    manifest = write_jsonl(tmp_path / "episode.jsonl", [line])
    with lane(stack, STS_API_BASE_URL=sts, STS_SEGMENT_WORKERS="3", STS_MAX_CONCURRENT_REQUESTS="3",
              STS_VISIBILITY_TIMEOUT_S="8", STS_HEARTBEAT_INTERVAL_S="2", STS_RESTORE_INTERVAL_S="1",
              STS_LEASE_S="6") as test_lane:
        doomed = test_lane.start_worker(concurrency=1)
        assert test_lane.cli("submit", str(manifest)).returncode == 0
        deadline = time.monotonic() + 240
        while _checkpoints(s3, bucket) < 6:
            assert time.monotonic() < deadline, "no segment was checkpointed"
            time.sleep(0.5)
        doomed.kill()
        time.sleep(1.0)
        done_before_kill = _checkpoints(s3, bucket)
        httpx.post(f"{sts}/_admin/reset", timeout=5)
        test_lane.start_worker(concurrency=1)
        deadline = time.monotonic() + 400
        while not s3.list_objects_v2(Bucket=bucket, Prefix="out/episode.pcm.provenance.json").get("KeyCount"):
            assert time.monotonic() < deadline, "the resumed job never committed"
            time.sleep(1.0)
        deadline = time.monotonic() + 30  # while the worker still runs: it removes them right after the commit
        while _checkpoints(s3, bucket):
            assert time.monotonic() < deadline, "segment checkpoints were left behind after the commit"
            time.sleep(0.5)

    record = json.loads(s3.get_object(Bucket=bucket, Key="out/episode.pcm.provenance.json")["Body"].read())
    segments = record["segments"]
    assert len(segments) >= MINUTES and all(s["end_s"] - s["start_s"] <= MAX_SEGMENT_S + 1e-6 for s in segments)
    resumed = [s for s in segments if s["source"] == "checkpoint"]
    assert len(resumed) == done_before_kill
    assert sts_stats(sts)["successes"] == len(segments) - done_before_kill

    original, _ = sf.read(source, dtype="float32")
    local = tmp_path / "episode.pcm"
    s3.download_file(bucket, "out/episode.pcm", str(local))
    converted = np.fromfile(local, dtype="<i2").astype(np.float32) / 32768
    assert abs(len(converted) - len(original)) / RATE <= 0.05

    speech_rms = float(np.sqrt(np.mean(original.astype(np.float64) ** 2)))
    for segment in segments[1:]:
        cut = round(segment["start_s"] * RATE)
        assert _rms(original, cut, RATE // 50) < 0.05 * speech_rms, f"cut at {segment['start_s']} s is not in a pause"

    jumps = np.abs(np.diff(converted))
    near_joins = np.zeros(len(jumps), dtype=bool)
    for segment in segments[1:]:
        cut = round(segment["start_s"] * RATE)
        near_joins[max(0, cut - 800): cut + 800] = True
    assert jumps[near_joins].max() <= jumps[~near_joins].max()


def test_a_long_mp3_with_a_speed_change_is_stitched_to_the_stretched_length(stack: LocalStack, s3, bucket: str,
                                                                           tmp_path: Path, sts: str) -> None:
    wav = write_speech_like(tmp_path / "talk.wav", 70.0, 22050, seed=5)
    mp3 = tmp_path / "talk.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-b:a", "64k", str(mp3)], check=True)
    s3.upload_file(str(mp3), bucket, "in/talk.mp3")
    line = {"input": f"s3://{bucket}/in/talk.mp3", "voice_id": VOICES[0], "output_format": "mp3_22050_32",
            "output": f"s3://{bucket}/out/talk.mp3", "max_segment_seconds": 30, "voice_settings": {"speed": 0.9}}
    manifest = write_jsonl(tmp_path / "talk.jsonl", [line])
    with lane(stack, STS_API_BASE_URL=sts) as test_lane:
        test_lane.start_worker(concurrency=1)
        result = test_lane.cli("submit", str(manifest), "--wait", "--timeout", "200")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(s3.get_object(Bucket=bucket, Key="out/talk.mp3.provenance.json")["Body"].read())
    assert len(record["segments"]) == 3
    assert all(a["outcome"] == "ok" for a in record["attempts"])
    local = tmp_path / "out.mp3"
    s3.download_file(bucket, "out/talk.mp3", str(local))
    assert decoded_seconds(local, "mp3_22050_32") == pytest.approx(70.0 / 0.9, abs=0.05)
