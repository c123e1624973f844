"""Overhead: per job, the time spent outside the API call, as a share of the API time, for 1-minute inputs.

    python -m bench.bench_overhead [--jobs 2]

Three views of the same job path, against the same services (offline server with L = 0.5 s + 0.2 s/s, so 12.5 s
for a minute of audio):

1. Through Celery (one worker, one process, jobs queued together): from each provenance record, ``total_s`` minus
   the attempts' ``duration_s``, over the latter; and the hand-off between two jobs (one's ``finished_at`` to the
   next one's ``started_at``), which no record counts.
2. In-process, unprofiled: ``pipeline.conversion.job.run_job`` with a ``WorkerContext`` from
   ``workers.tasks.worker_context``
   (what a worker process builds), and the HTTP call timed exactly. An attempt's ``duration_s`` also holds the limiter
   and the output's quality measure; this view does not.
3. In-process under cProfile, with the profiler switched off during the HTTP call: where the rest goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from bench.common import VOICE_IDS, Lane, LatencyModel, epoch, read_records, s3_client, upload_files
from bench.report import BenchResult, Figure, Headline, pct
from pipeline.config import get_settings
from pipeline.conversion.job import run_job
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from pipeline.manifest.load import parse_manifest
from pipeline.run.message import JobMessage
from pipeline.storage.s3 import Storage
from workers.tasks import worker_context

MODEL = LatencyModel(fixed_s=0.5, per_audio_s=0.2)
BUCKET = "bench-overhead"
INPUT_S = 60.0
OUTPUT_FORMAT = "mp3_44100_128"
GOAL_SHARE = 0.03
API_KEY = "bench-overhead-key"
TOP = 12


def _line(n: int, name: str) -> dict[str, Any]:
    return {"input": f"s3://{BUCKET}/in/{n}.wav", "voice_id": VOICE_IDS[n % len(VOICE_IDS)], "seed": n,
            "output": f"s3://{BUCKET}/{name}/{n}.mp3", "output_format": OUTPUT_FORMAT}


def through_celery(lane: Lane, storage: Storage, workdir: Path, jobs: int) -> list[dict[str, Any]]:
    """Run ``jobs`` one after another on one worker process; return their provenance records."""
    lines = [_line(n, "celery") for n in range(jobs)]
    manifest = workdir / "overhead.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    lane.start_workers(1, 1)
    run_id = lane.submit(manifest)
    lane.wait(run_id, jobs, timeout_s=jobs * (MODEL.seconds(INPUT_S) + 30) + 30)
    lane.stop_workers()
    return [r.provenance for r in read_records(storage, [line["output"] for line in lines]) if r.provenance]


class TimedHttp:
    """Wraps the STS client's ``convert``: times each call and pauses a profiler around it, if one is given."""

    def __init__(self, convert: Callable[..., Any], profiler: cProfile.Profile | None = None) -> None:
        self._convert = convert
        self._profiler = profiler
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._profiler is not None:
            self._profiler.disable()
        mark = time.monotonic()
        try:
            return self._convert(*args, **kwargs)
        finally:
            self.seconds += time.monotonic() - mark
            if self._profiler is not None:
                self._profiler.enable()


def in_process(n: int, name: str, profiler: cProfile.Profile | None) -> dict[str, Any]:
    """Run one job with ``run_job`` in this process, as a worker process would (its ``WorkerContext`` from
    ``worker_context``, so the settings of the environment); time the HTTP call apart."""
    ctx = worker_context()
    shard = parse_manifest((json.dumps(_line(n, name)) + "\n").encode(), f"{name}.jsonl")
    entry = shard.entries[0]
    message = JobMessage(run_id=f"bench-{name}", shard=entry.shard, line=entry.line, job_id=entry.job_id,
                         output=entry.output, job=entry.job.model_dump(mode="json", exclude_none=True),
                         queued_at=time.time())
    timed = TimedHttp(ctx.client.stream, profiler)
    ctx.client.stream = timed  # type: ignore[method-assign]
    try:
        mark = time.monotonic()
        if profiler is not None:
            profiler.enable()
        state = run_job(ctx.for_job(message))
        if profiler is not None:
            profiler.disable()
        wall_s = time.monotonic() - mark
    finally:
        del ctx.client.stream  # back to the class's method
    return {"state": state.value, "wall_s": wall_s, "http_s": timed.seconds, "output": entry.output}


def profile_tables(profiler: cProfile.Profile, outside_s: float) -> tuple[Figure, Figure]:
    """The pipeline's own functions by cumulative time, and every function by own time, HTTP call excluded."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [(file, line, func, own, cumulative, calls)
            for (file, line, func), (_, calls, own, cumulative, _) in stats.items()]
    ours = Figure(f"Profile: the pipeline's functions by cumulative time, outside the HTTP call (of "
                  f"{outside_s:.3f} s profiled)", ["function", "calls", "cumulative s", "share"])
    skip = {"run_job", "_convert", "_make", "<module>"}
    for file, line, func, _, cumulative, calls in sorted(rows, key=lambda r: -r[4]):
        if "/pipeline/" in file and func not in skip and len(ours.rows) < TOP:
            ours.add(f"{file.split('/pipeline/')[-1]}:{line} {func}", calls, round(cumulative, 3),
                     pct(cumulative / outside_s))
    own = Figure("Profile: every function by own time, outside the HTTP call", ["function", "calls", "own s",
                                                                                 "share"])
    for file, line, func, own_s, _, calls in sorted(rows, key=lambda r: -r[3])[:TOP]:
        where = file.split("site-packages/")[-1].split("/pipeline/")[-1]
        own.add(f"{where}:{line} {func}" if line else func, calls, round(own_s, 3), pct(own_s / outside_s))
    return ours, own


def figures(celery: list[dict[str, Any]], timed: dict[str, Any], profiled: dict[str, Any],
            profiler: cProfile.Profile) -> list[Figure]:
    per_job = Figure(f"Overhead per job, {INPUT_S:.0f} s inputs (API L = {MODEL.seconds(INPUT_S):.1f} s by the model)",
                     ["view", "API s", "outside s", "outside / API", "goal"])
    for n, record in enumerate(sorted(celery, key=lambda r: r["timings"]["started_at"])):
        api_s = sum(a["duration_s"] for a in record["attempts"])
        outside_s = record["timings"]["total_s"] - api_s
        first = " (first in a fresh worker process)" if n == 0 else ""
        per_job.add(f"Celery job {n + 1}{first}: total_s - attempts", round(api_s, 3), round(outside_s, 3),
                    pct(outside_s / api_s), f"<= {pct(GOAL_SHARE)}")
    starts = sorted((epoch(r["timings"]["started_at"]), epoch(r["timings"]["finished_at"])) for r in celery)
    gaps = [b[0] - a[1] for a, b in zip(starts, starts[1:], strict=False)]
    for label, run in (("in-process run_job, HTTP timed", timed), ("same, under cProfile", profiled)):
        outside_s = run["wall_s"] - run["http_s"]
        per_job.add(label, round(run["http_s"], 3), round(outside_s, 3), pct(outside_s / run["http_s"]),
                    f"<= {pct(GOAL_SHARE)}" if run is timed else None)
    stages = Figure("Where a Celery job's time goes (provenance timings, mean s)",
                    ["download", "prepare (probe + check)", "convert (attempts)", "upload", "rest (commit, "
                     "bookkeeping)", "total", "hand-off to the next job"])
    if celery:
        timings = [r["timings"] for r in celery]
        avg = {k: mean(t[k] for t in timings) for k in ("download_s", "prepare_s", "convert_s", "upload_s", "total_s")}
        rest = avg["total_s"] - avg["download_s"] - avg["prepare_s"] - avg["convert_s"] - avg["upload_s"]
        stages.add(round(avg["download_s"], 3), round(avg["prepare_s"], 3), round(avg["convert_s"], 3),
                   round(avg["upload_s"], 3), round(rest, 3), round(avg["total_s"], 3),
                   round(mean(gaps), 3) if gaps else None)
        stages.notes.append("an attempt's duration_s runs from the limiter wait to the end of the output's quality "
                            "measure; the in-process rows time the HTTP call alone")
    ours, own = profile_tables(profiler, profiled["wall_s"] - profiled["http_s"])
    return [per_job, stages, ours, own]


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="jobs through Celery")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        workdir = Path(tmp)
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--max-concurrent", "5", *MODEL.server_args())
        client = s3_client(stack)
        client.create_bucket(Bucket=BUCKET)
        count = args.jobs + 2
        files = [write_speech_like(workdir / f"in-{n}.wav", INPUT_S, seed=n) for n in range(count)]
        upload_files(client, [(path, f"s3://{BUCKET}/in/{n}.wav") for n, path in enumerate(files)])
        lane = Lane(stack, "bench-overhead", API_KEY, {"STS_MAX_CONCURRENT_REQUESTS": "5"})
        celery = through_celery(lane, Storage(client), workdir, args.jobs)
        with stack.applied():
            os.environ.update({k: v for k, v in lane.env().items() if k.startswith("STS_")})
            get_settings.cache_clear()
            timed = in_process(args.jobs, "timed", None)
            profiler = cProfile.Profile()
            profiled = in_process(args.jobs + 1, "profiled", profiler)
            get_settings.cache_clear()
    share = (timed["wall_s"] - timed["http_s"]) / timed["http_s"]
    headline = Headline(f"time outside the API call / API time, {INPUT_S:.0f} s input", pct(share),
                        f"<= {pct(GOAL_SHARE)}", share <= GOAL_SHARE)
    result = BenchResult("overhead", figures(celery, timed, profiled, profiler), [headline],
                         raw={"celery": [{"timings": r["timings"], "attempts": r["attempts"]} for r in celery],
                              "in_process": timed, "profiled": profiled})
    return result.finish(started)


if __name__ == "__main__":
    main()
