"""Helpers the integration tests share: per-test isolation on the shared services, sample uploads, CLI runs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.lane import Lane, lane  # noqa: F401  (the shared harness; the tests import it from here)
from pipeline.local.samples import speech_like
from pipeline.ops.queue import priority_lists

VOICES = ("BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9", "vK7n2rg6OeynABb4ilbv", "xmXfcXc3zRgo3GlCx0pq")
#: the worker pools the delivery, drain, cap and budget tests run in (``sts-pipeline worker --pool``)
POOLS = ("prefork", "threads")
#: what Celery's start-up banner says of each pool (``concurrency: N (thread)``): a test can check it got the pool
POOL_BANNERS = {"prefork": "(prefork)", "threads": "(thread)"}
#: worker settings that make a dead worker's job come back within seconds (tests of redelivery)
FAST_REDELIVERY = {"STS_VISIBILITY_TIMEOUT_S": "8", "STS_HEARTBEAT_INTERVAL_S": "2", "STS_RESTORE_INTERVAL_S": "1",
                   "STS_LEASE_S": "6"}


def write_input(path: Path, seconds: float, *, sr: int = 16000, seed: int = 0) -> Path:
    """A speech-like recording in the format the suffix names (.wav, .flac, .mp3 via ffmpeg, .pcm raw 16 kHz)."""
    signal = speech_like(seconds, sr, seed=seed)
    if path.suffix == ".pcm":
        (np.clip(signal, -1, 1) * 32767).astype("<i2").tofile(path)
    elif path.suffix in (".wav", ".flac"):
        sf.write(path, signal, sr)
    else:
        wav = path.with_suffix(".src.wav")
        sf.write(wav, signal, sr)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(path)], check=True)
        wav.unlink()
    return path


def decoded_seconds(path: Path, output_format: str) -> float:
    """Duration of an output by decoding it with ffmpeg and counting samples."""
    fmt = OUTPUT_FORMATS[output_format]
    raw = subprocess.run(["ffmpeg", "-v", "error", *fmt.ffmpeg_input_args(), "-i", str(path), "-f", "s16le",
                          "-ac", "1", "-ar", str(fmt.sample_rate), "-"], check=True, capture_output=True).stdout
    return len(raw) / 2 / fmt.sample_rate


def write_jsonl(path: Path, lines: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def sts_stats(url: str) -> dict[str, Any]:
    """The offline server's counters (``GET /_admin/stats``)."""
    return dict(httpx.get(f"{url}/_admin/stats", timeout=5).json())


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll until ``predicate()`` is true; return the monotonic time it became so, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def object_versions(s3: Any, bucket: str, key: str) -> int:
    """How many versions of exactly ``key`` a versioned bucket holds."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == key)


def queued(client: Any, queue: str) -> int:
    """Messages waiting on ``queue``, in its base list and every priority sub-list (a normal-priority run's messages
    are not in the base list)."""
    return sum(int(client.llen(name)) for name in priority_lists(queue))
