"""Memory per request in flight: one threads worker holding 50 requests at once, beside prefork's process per request.

    python -m bench.bench_inflight_memory [--jobs 50] [--latency-s 25] [--prefork-jobs 10] [--prefork-latency-s 10]

The offline server runs ``--engine light`` and answers every request after ``--latency-s`` seconds, long enough
that all of a worker's jobs download, probe and prepare their input and are in flight together. One worker with
``--pool threads -c 50`` (and ``STS_MAX_CONCURRENT_REQUESTS=50``) gets 50 jobs of 10-30 s; the benchmark samples
the server's requests in flight and the worker's whole process tree (ffmpeg children included: every process in
its session, ``bench.memory``) and reports RSS and PSS at the moment the most requests were in flight and at their
peak over the run, against the issue's goal of 1.5 GB RSS for 50 in flight. Then, for comparison, a prefork worker
with ``-c 10`` holds 10 (``--prefork-jobs 0`` skips it), against a shorter latency since ten jobs start sooner.
About 90 s in all on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import bench_throughput as throughput
from bench.common import InFlightSampler, Lane, reset_server_stats, s3_client, server_stats
from bench.memory import MemorySample, PeakMemory, sample
from bench.report import BenchResult, Figure, Headline
from pipeline.local.services import LocalStack
from pipeline.run.progress import done_count

GOAL_RSS_MB = 1500.0
GOAL_IN_FLIGHT = 50
OUTPUT_FORMAT = "mp3_44100_128"


@dataclass(frozen=True)
class Arm:
    """One worker's figures: what it held at once, and its memory then and at its peak."""

    pool: str
    concurrency: int
    jobs: int
    succeeded: int
    max_in_flight: int
    at_max: MemorySample
    peak: MemorySample
    wall_s: float
    pool_full_warnings: int


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=GOAL_IN_FLIGHT, help="jobs (and -c) of the threads worker")
    parser.add_argument("--prefork-jobs", type=int, default=10, help="jobs (and -c) of the prefork worker; 0: skip")
    parser.add_argument("--latency-s", type=float, default=25.0, help="the server's time for every request")
    parser.add_argument("--prefork-latency-s", type=float, default=10.0, help="the same for the prefork worker")
    return parser.parse_args(argv)


def _run_arm(stack: LocalStack, pool: str, concurrency: int, manifest: Path, jobs: int, timeout_s: float) -> Arm:
    """Start one worker, submit ``manifest``, sample in flight and memory until every job is done."""
    lane = Lane(stack, f"bench-mem-{pool}", f"bench-mem-{pool}-key",
                {"STS_MAX_CONCURRENT_REQUESTS": str(concurrency)}, pool=pool)
    (worker,) = lane.start_workers(1, concurrency)
    reset_server_stats(stack.sts_url)
    best = (0, MemorySample())
    started = time.monotonic()
    with PeakMemory(stack, lambda name: name == worker.name) as seen:
        sampler = InFlightSampler(stack.sts_url, interval_s=0.25)
        sampler.start()
        run_id = lane.submit(manifest)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            now = sampler.samples[-1][1] if sampler.samples else 0
            if now > best[0] or (now == best[0] and now):
                best = (now, sample({worker.pid}))  # the last look while the most requests were in flight
            if done_count(lane.wait(run_id, jobs, timeout_s=0.0)) >= jobs:
                break
            time.sleep(0.5)
        sampler.stop()
    wall_s = time.monotonic() - started
    counts = lane.wait(run_id, jobs, timeout_s=0.0)
    log = worker.log_path.read_text(errors="replace")
    lane.stop_workers()
    return Arm(pool, concurrency, jobs, int(counts.get("succeeded", 0)),
               max(best[0], int(server_stats(stack.sts_url)["max_in_flight"])), best[1], seen.peak, wall_s,
               log.count("Connection pool is full"))


def _manifest(batch: list[Any], workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.jsonl"
    path.write_text("".join(json.dumps(job.line(f"s3://{throughput.BUCKET}/{name}/{job.index:04d}.mp3",
                                                OUTPUT_FORMAT)) + "\n" for job in batch))
    return path


def figure(arms: list[Arm], args: argparse.Namespace) -> Figure:
    table = Figure(f"Worker memory with requests in flight (light engine, every request {args.latency_s:g} s; "
                   f"prefork's {args.prefork_latency_s:g} s)",
                   ["worker", "jobs ok", "max in flight", "RSS MB at max", "PSS MB at max", "processes at max",
                    "RSS MB per request", "peak RSS MB", "peak PSS MB", "wall s"])
    for arm in arms:
        held = max(1, arm.max_in_flight)
        table.add(f"{arm.pool} -c {arm.concurrency}", f"{arm.succeeded} / {arm.jobs}", arm.max_in_flight,
                  round(arm.at_max.rss_mb), round(arm.at_max.pss_mb), arm.at_max.processes,
                  round(arm.at_max.rss_mb / held, 1), round(arm.peak.rss_mb), round(arm.peak.pss_mb),
                  round(arm.wall_s, 1))
    table.notes.append("the worker's whole session: its main process, pool processes or threads, and the ffmpeg "
                       "children alive at the moment; RSS counts pages shared after fork once per process, PSS "
                       "splits them")
    table.notes.append(f"goal (issue 20): {GOAL_IN_FLIGHT} requests in flight in <= {GOAL_RSS_MB:,.0f} MB RSS for "
                       "all worker processes together")
    warnings = sum(arm.pool_full_warnings for arm in arms)
    if warnings:
        table.notes.append(f"urllib3 'Connection pool is full' warnings in the worker logs: {warnings} (boto3's "
                           "pool is smaller than the threads using it)")
    return table


def headlines(arms: list[Arm]) -> list[Headline]:
    threads = next((arm for arm in arms if arm.pool == "threads"), None)
    if threads is None:
        return []
    ok = threads.max_in_flight >= GOAL_IN_FLIGHT and threads.succeeded == threads.jobs
    return [Headline(f"{threads.max_in_flight} requests in flight, one threads worker",
                     f"RSS {threads.at_max.rss_mb:,.0f} MB (peak {threads.peak.rss_mb:,.0f}), PSS "
                     f"{threads.at_max.pss_mb:,.0f} MB", f"<= {GOAL_RSS_MB:,.0f} MB RSS at {GOAL_IN_FLIGHT}",
                     ok and threads.peak.rss_mb <= GOAL_RSS_MB)]


def main(argv: list[str] | None = None) -> BenchResult:
    args = _parse(argv)
    started = time.monotonic()
    cap = max(args.jobs, args.prefork_jobs)
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--engine", "light", "--max-concurrent", str(cap), "--plan-concurrency", str(cap),
                        "--latency-fixed", str(args.latency_s))
        client = s3_client(stack)
        client.create_bucket(Bucket=throughput.BUCKET)
        batch = throughput.make_batch(client, Path(tmp), args.jobs + args.prefork_jobs, 10, 10.0, 30.0)
        arms = [_run_arm(stack, "threads", args.jobs, _manifest(batch[:args.jobs], Path(tmp), "threads"),
                         args.jobs, 3 * args.latency_s + 60)]
        if args.prefork_jobs:
            httpx.put(f"{stack.sts_url}/_admin/faults", json={"latency_fixed_s": args.prefork_latency_s},
                      timeout=5).raise_for_status()
            arms.append(_run_arm(stack, "prefork", args.prefork_jobs,
                                 _manifest(batch[args.jobs:], Path(tmp), "prefork"), args.prefork_jobs,
                                 3 * args.prefork_latency_s + 60))
    result = BenchResult("inflight_memory", [figure(arms, args)], headlines(arms),
                         raw={"arms": [asdict(arm) for arm in arms], "args": vars(args)})
    return result.finish(started)


if __name__ == "__main__":
    main()
