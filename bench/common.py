"""Helpers the benchmarks share: worker lanes on a LocalStack, speech-like inputs in S3, records read back from S3,
and two samplers (CPU per service from /proc; requests in flight from the offline server's admin endpoint).

Everything runs on loopback. Every wait is bounded; a lane's workers are registered with the stack, so
``LocalStack.close`` stops them with the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from pipeline.local.lane import Lane, wait_for_log  # noqa: F401  (the shared harness; benchmarks import it from here)
from pipeline.local.services import LOCAL_AWS_ENV, LocalStack, Service
from pipeline.offline.voices import VOICES
from pipeline.s3uri import S3Uri
from pipeline.storage.records import failure_uri, provenance_uri
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs

REPO_ROOT = Path(__file__).resolve().parent.parent
VOICE_IDS = tuple(VOICES)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the offline server's latency model

@dataclass(frozen=True)
class LatencyModel:
    """The offline server's floor on a 200: ``fixed_s + per_audio_s * seconds of input``."""

    fixed_s: float = 0.5
    per_audio_s: float = 0.2

    def server_args(self) -> list[str]:
        return ["--latency-fixed", str(self.fixed_s), "--latency-per-audio-second", str(self.per_audio_s)]

    def seconds(self, audio_s: float) -> float:
        return self.fixed_s + self.per_audio_s * audio_s


@dataclass(frozen=True)
class BatchJob:
    """One job of a benchmark batch: its input in S3, voice, seed and input duration."""

    index: int
    input: str
    voice_id: str
    seed: int
    audio_s: float

    def line(self, output: str, output_format: str) -> dict[str, Any]:
        """The job as a manifest line (and as the naive task's argument)."""
        return {"input": self.input, "voice_id": self.voice_id, "seed": self.seed, "output": output,
                "output_format": output_format}


# --- lanes: a queue, an API key (so a limiter of its own) and settings, with their workers

# --- S3

def s3_client(stack: LocalStack, pool: int = 32) -> Any:
    """A boto3 S3 client for the stack's S3 server, with a connection pool for ``pool`` threads."""
    return boto3.client("s3", endpoint_url=stack.s3_url, region_name=LOCAL_AWS_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                        config=Config(max_pool_connections=pool, s3={"addressing_style": "path"},
                                      retries={"max_attempts": 4, "mode": "standard"}))


def upload_files(client: Any, items: Sequence[tuple[Path, str]], threads: int = 8) -> None:
    """Upload each (local file, s3 URI) pair, a few at a time."""
    def one(item: tuple[Path, str]) -> None:
        uri = S3Uri.parse(item[1])
        client.upload_file(str(item[0]), uri.bucket, uri.key)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, items))


@dataclass(frozen=True)
class JobRecords:
    """What S3 holds for one output: its provenance record and its failure record (either may be None)."""

    output: str
    provenance: dict[str, Any] | None
    failure: dict[str, Any] | None


def read_records(storage: Storage, outputs: Iterable[str], threads: int = 16) -> list[JobRecords]:
    """Read back the records of ``outputs``: one listing per directory, then one GET per record found."""
    wanted = list(outputs)
    presence = scan_outputs(storage, wanted)

    def one(output: str) -> JobRecords:
        seen, uri = presence[output], S3Uri.parse(output)
        provenance = storage.get_json(provenance_uri(uri)) if seen.provenance else None
        failure = storage.get_json(failure_uri(uri)) if seen.failure else None
        return JobRecords(output, provenance[0] if provenance else None, failure[0] if failure else None)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, wanted))


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO-8601 timestamp from a record."""
    return datetime.fromisoformat(iso).timestamp()


# --- the offline server's admin endpoint

def server_stats(sts_url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{sts_url}/_admin/stats", timeout=5).json())


def reset_server_stats(sts_url: str) -> None:
    httpx.post(f"{sts_url}/_admin/reset", timeout=5).raise_for_status()


class InFlightSampler(threading.Thread):
    """Polls ``/_admin/stats`` every ``interval_s`` and keeps (monotonic time, requests in flight)."""

    def __init__(self, sts_url: str, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="in-flight-sampler")
        self._url = f"{sts_url}/_admin/stats"
        self._interval_s = interval_s
        self._halt = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._halt.is_set():
                try:
                    self.samples.append((time.monotonic(), int(client.get(self._url).json()["in_flight"])))
                except (httpx.HTTPError, ValueError, KeyError):
                    pass  # a missed sample only widens the gap to the next one
                self._halt.wait(self._interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def mean_between(self, start: float, end: float) -> float:
        """Time-weighted mean of the requests in flight between two monotonic times (0 if no samples)."""
        points = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(points) < 2:
            return 0.0
        area = sum(n * (t2 - t1) for (t1, n), (t2, _) in zip(points, points[1:], strict=False))
        return area / (points[-1][0] - points[0][0])


# --- CPU accounting

def _session_cpu_s(session_ids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system, reaped children included) of every live process, summed per session id."""
    totals: dict[int, float] = dict.fromkeys(session_ids, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process exited while we looked
        session = int(fields[3])  # field 6 of stat; fields[0] is field 3 (state)
        if session in totals:
            totals[session] += sum(int(v) for v in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return totals


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def _self_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


class CpuMeter:
    """CPU used by each named group of services (their whole process session) and by this process, between
    ``start`` and ``stop``; and how busy the machine was overall, so that other load shows too."""

    def __init__(self, groups: Mapping[str, Sequence[Service]]) -> None:
        self._groups = {name: [s.pid for s in services] for name, services in groups.items()}
        self._start: tuple[dict[int, float], float, tuple[float, float], float] | None = None
        self.cpu_s: dict[str, float] = {}
        self.wall_s = 0.0
        self.machine_busy_cores = 0.0

    def _read(self) -> tuple[dict[int, float], float, tuple[float, float], float]:
        sessions = {pid for pids in self._groups.values() for pid in pids}
        return _session_cpu_s(sessions), _self_cpu_s(), _machine_busy_s(), time.monotonic()

    def start(self) -> CpuMeter:
        self._start = self._read()
        return self

    def stop(self) -> CpuMeter:
        assert self._start is not None, "start() first"
        sessions0, self0, (busy0, total0), t0 = self._start
        sessions1, self1, (busy1, total1), t1 = self._read()
        self.wall_s = t1 - t0
        for name, pids in self._groups.items():
            self.cpu_s[name] = sum(max(0.0, sessions1.get(p, 0.0) - sessions0.get(p, 0.0)) for p in pids)
        self.cpu_s["bench process"] = self1 - self0
        cores = os.cpu_count() or 1
        self.machine_busy_cores = cores * (busy1 - busy0) / max(1e-9, total1 - total0)
        return self

    def cores(self, name: str) -> float:
        return self.cpu_s.get(name, 0.0) / max(1e-9, self.wall_s)

    def ours_cores(self) -> float:
        return sum(self.cpu_s.values()) / max(1e-9, self.wall_s)


class Observation:
    """One stretch of a benchmark, watched: requests in flight at the server and CPU per process group.

    ``summary`` adds Little's law: with the model's request times of the jobs done, ``stretch`` is real over model
    request time, and ``occupancy`` the mean requests in flight over the cap.
    """

    def __init__(self, sts_url: str, groups: Mapping[str, Sequence[Service]]) -> None:
        self.meter = CpuMeter(groups)
        self.sampler = InFlightSampler(sts_url)
        self.started = self.ended = 0.0

    def __enter__(self) -> Observation:
        self.meter.start()
        self.sampler.start()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.monotonic()
        self.sampler.stop()
        self.meter.stop()

    def summary(self, model_l_s: Sequence[float], cap: int, start: float | None = None,
                end: float | None = None) -> dict[str, Any]:
        """Occupancy, stretch and CPU between two monotonic times (default: the whole observation)."""
        start, end = start if start is not None else self.started, end if end is not None else self.ended
        in_flight = self.sampler.mean_between(start, end)
        return {"in_flight_mean": in_flight, "occupancy": in_flight / cap,
                "stretch": in_flight * (end - start) / sum(model_l_s) if model_l_s else 0.0,
                "cpu_s": dict(self.meter.cpu_s), "cpu_wall_s": self.meter.wall_s,
                "machine_busy_cores": self.meter.machine_busy_cores}
