"""Helpers the integration tests share: per-test isolation on the shared services, sample uploads, CLI runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from pipeline.local.services import LocalStack, Service
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import speech_like

VOICES = ("BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9", "vK7n2rg6OeynABb4ilbv", "xmXfcXc3zRgo3GlCx0pq")
#: worker settings that make a dead worker's job come back within seconds (tests of redelivery)
FAST_REDELIVERY = {"STS_VISIBILITY_TIMEOUT_S": "8", "STS_HEARTBEAT_INTERVAL_S": "2", "STS_RESTORE_INTERVAL_S": "1",
                   "STS_LEASE_S": "6"}


@dataclass
class Lane:
    """One test's private lane on the shared services: its own queue, API key (so its own limiter) and buckets."""

    stack: LocalStack
    queue: str
    api_key: str
    overrides: dict[str, str] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = self.stack.env()
        env.update({"STS_QUEUE": self.queue, "STS_API_KEY": self.api_key, **self.overrides, **extra})
        return env

    def start_worker(self, concurrency: int = 2, **extra: str) -> Service:
        service = self.stack.start_worker(concurrency, name=f"{self.queue}-w{len(self.workers)}",
                                          extra_env=self.env(**extra))
        self.workers.append(service)
        return service

    def cli(self, *args: str, timeout_s: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout_s)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@contextmanager
def lane(stack: LocalStack, **overrides: str) -> Iterator[Lane]:
    tag = uuid.uuid4().hex[:8]
    current = Lane(stack, queue=f"q-{tag}", api_key=f"test-key-{tag}", overrides=dict(overrides))
    try:
        yield current
    finally:
        current.close()


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
