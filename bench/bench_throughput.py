"""Throughput: how close a batch gets to the plan's ceiling N / mean(L), beside a plain SDK loop and naive Celery.

    python -m bench.bench_throughput [--jobs 200] [--sdk-jobs 6] [--naive-jobs 30] [--per-audio-s 0.2]

The offline server admits at most N = 5 requests at once and answers each in at least L = 0.5 s + 0.2 s per second
of input. 200 jobs of 10-30 s of speech-like audio go through the pipeline (2 workers x 4 processes, one shared
limiter at N); then a sequential loop over the vendor SDK and the naive Celery baseline run on subsets. No client can
beat N / mean(L) jobs a second.

Why the ratio is what it is: ``ratio = occupancy / stretch``, where occupancy is the mean number of requests in
flight over N (sampled from the server every 0.1 s) and stretch is the mean real request time over the model's L
(Little's law on the same samples). Occupancy below 1 is the client's doing (ramp-up, hand-offs between requests,
the last wave draining); stretch above 1 is the server's (its conversion competing for the CPU).

On 2 cores the offline server's own conversion needs about as much CPU as the machine has at this ceiling (the CPU
table shows it). ``--per-audio-s 0.5 --jobs 100 --sdk-jobs 0 --naive-jobs 0`` is the control: a slower model
whose ceiling needs about half the machine, so what remains is the pipeline's own shortfall.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

from bench.baselines import naive_workers, sdk_loop
from bench.common import (
    VOICE_IDS,
    BatchJob,
    Lane,
    LatencyModel,
    Observation,
    epoch,
    read_records,
    reset_server_stats,
    s3_client,
    server_stats,
    upload_files,
)
from bench.naive_celery import MAX_RETRIES as NAIVE_RETRIES
from bench.report import BenchResult, Figure, Headline, pct
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from pipeline.storage.s3 import Storage

CAP = 5
BUCKET = "bench-throughput"
OUTPUT_FORMAT = "mp3_44100_128"  # the API's default
GOAL_RATIO = 0.95


def recording_order(count: int) -> list[int]:
    """Shortest, longest, 2nd shortest, 2nd longest...: every even-length prefix has the batch's mean duration."""
    order = []
    for low, high in zip(range(count), reversed(range(count)), strict=False):
        if low > high:
            break
        order += [low] if low == high else [low, high]
    return order


def make_batch(client: Any, workdir: Path, jobs: int, recordings: int, low_s: float, high_s: float) -> list[BatchJob]:
    """``recordings`` speech-like WAVs evenly spread over [low_s, high_s], in S3 once each; the jobs take them in
    turn (as a dataset night gives one recording to several voices), each with its own output."""
    step = (high_s - low_s) / max(1, recordings - 1)
    durations = [round(low_s + step * n, 2) for n in range(recordings)]
    files = [write_speech_like(workdir / f"rec-{n:02d}.wav", seconds, seed=n) for n, seconds in enumerate(durations)]
    uris = [f"s3://{BUCKET}/in/rec-{n:02d}.wav" for n in range(recordings)]
    upload_files(client, list(zip(files, uris, strict=True)))
    order = recording_order(recordings)
    rng = random.Random(7)
    return [BatchJob(index, uris[order[index % recordings]], VOICE_IDS[index % len(VOICE_IDS)], rng.randrange(2**31),
                     durations[order[index % recordings]]) for index in range(jobs)]


def run_pipeline(stack: LocalStack, storage: Storage, batch: list[BatchJob], workdir: Path, *, model: LatencyModel,
                 workers: int, processes: int, timeout_s: float, cap: int = CAP, pool: str = "prefork",
                 output_format: str = OUTPUT_FORMAT, name: str = "throughput") -> dict[str, Any]:
    """Submit the batch through the CLI to ``workers`` workers of ``processes`` jobs at once each (prefork
    processes or threads); read back every record."""
    lane = Lane(stack, f"bench-{name}", "bench-pipeline-key",
                {"STS_MAX_CONCURRENT_REQUESTS": str(cap), "STS_WORKER_POOL": pool})
    services = lane.start_workers(workers, processes)
    extension = "pcm" if output_format.startswith("pcm_") else output_format.split("_")[0]
    outputs = [f"s3://{BUCKET}/{name}/{job.index:04d}.{extension}" for job in batch]
    manifest = workdir / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(job.line(out, output_format)) + "\n"
                                for job, out in zip(batch, outputs, strict=True)))
    reset_server_stats(stack.sts_url)
    groups = {"offline STS server": [stack.service("sts")], "S3 (moto)": [stack.service("s3")],
              "redis": [stack.service("redis")], "workers (+ffmpeg)": services}
    clock_offset = time.monotonic() - time.time()
    with Observation(stack.sts_url, groups) as seen:
        run_id = lane.submit(manifest)
        counts = lane.wait(run_id, len(batch), timeout_s)
        waited_until = time.time()
    stats = server_stats(stack.sts_url)
    lane.stop_workers()
    records = read_records(storage, outputs)
    committed = [r.provenance for r in records if r.provenance]
    queued = min(epoch(p["timings"]["queued_at"]) for p in committed) if committed else time.time()
    ended = [epoch(p["timings"]["finished_at"]) for p in committed] + [epoch(r.failure["at"]) for r in records
                                                                         if r.failure and not r.provenance]
    starts = sorted(epoch(a["started_at"]) for p in committed for a in p["attempts"])
    wall_s = (max(ended) if len(ended) == len(batch) else waited_until) - queued
    finished = sorted(epoch(p["timings"]["finished_at"]) for p in committed)
    steady = [t for t in finished if starts and t <= starts[-1]]
    audio = {job.index: job.audio_s for job in batch}
    model_l = [model.seconds(audio[int(Path(r.output).stem)]) for r in records if r.provenance]
    start = queued + clock_offset
    return {
        "jobs": len(batch), "succeeded": len(committed), "failed": sum(1 for r in records if r.failure),
        "counts": dict(counts), "wall_s": wall_s, "model_l_s": model_l,
        "steady_window_s": (steady[-1] - steady[0]) if len(steady) > 1 else 0.0,
        "steady_jobs": len(steady) - 1,
        "observed": seen.summary(model_l, cap, start, start + wall_s), "cap": cap, "pool": pool,
        "workers": workers, "processes": processes,
        "occupancy_steady": seen.sampler.mean_between(starts[0] + clock_offset, starts[-1] + clock_offset) / cap
        if starts else 0.0,
        "first_request_s": (starts[0] - queued) if starts else None,
        "retried_jobs": sum(1 for p in committed if len(p["attempts"]) > 1),
        "server": stats,
        "stage_means_s": {k: mean(p["timings"][k] for p in committed)
                          for k in ("download_s", "prepare_s", "convert_s", "upload_s", "total_s", "queue_wait_s")}
        if committed else {},
    }


def _client_cpu_s(observed: dict[str, Any]) -> float:
    """CPU of everything but the offline server and S3 (the stand-ins for remote services)."""
    return sum(v for k, v in observed["cpu_s"].items() if k not in ("offline STS server", "S3 (moto)"))


def figures(pipe: dict[str, Any], sdk: dict[str, Any], naive: dict[str, Any], model: LatencyModel, *,
            naive_timeout_s: float, goal: float = GOAL_RATIO) -> list[Figure]:
    cap = pipe["cap"]
    mean_l = mean(pipe["model_l_s"]) if pipe["model_l_s"] else model.seconds(20.0)
    ceiling = cap / mean_l
    rate = pipe["succeeded"] / pipe["wall_s"]
    seen = pipe["observed"]
    shape = f"{pipe['workers']} workers x {pipe['processes']} {_unit(pipe['pool'])}"
    main = Figure(f"Throughput: {pipe['jobs']} jobs of 10-30 s, cap N={cap}, L = {model.fixed_s} s + "
                  f"{model.per_audio_s} s/s of audio ({shape})", ["figure", "value", "goal"])
    unfinished = pipe["jobs"] - pipe["succeeded"] - pipe["failed"]
    main.add("jobs succeeded / failed / unfinished at the bound", f"{pipe['succeeded']} / {pipe['failed']} / "
             f"{unfinished}", f"{pipe['jobs']} / 0 / 0")
    main.add("wall, enqueue -> last commit (s)" if not unfinished else "wall: the time bound (s)",
             round(pipe["wall_s"], 1), None)
    main.add("mean model L (s)", round(mean_l, 3), None)
    main.add("ceiling N / mean(L) (jobs/s)", round(ceiling, 3), None)
    main.add("achieved (jobs/s)", round(rate, 3), None)
    main.add("achieved / ceiling", pct(rate / ceiling), f">= {pct(goal)}")
    if pipe["steady_window_s"]:
        steady = pipe["steady_jobs"] / pipe["steady_window_s"]
        main.add("same, steady state: commits from the first commit to the last request start", pct(steady / ceiling),
                 None)
    main.add("occupancy: mean in flight / N, whole run", pct(seen["occupancy"]), None)
    main.add("occupancy, first request -> last request start", pct(pipe["occupancy_steady"]), None)
    main.add("stretch: real / model request time", f"{seen['stretch']:.3f}", "1.000")
    main.add("first request after enqueue (s)", pipe["first_request_s"], None)
    server = pipe["server"]
    main.add("server: requests / 429s / max in flight",
             f"{server['requests_total']} / {server['requests_by_status'].get('429', 0)} / "
             f"{server['max_in_flight']}", f"{pipe['jobs']} / 0 / {cap}")
    main.add("jobs with more than one attempt", pipe["retried_jobs"], "0")
    main.notes.append("achieved / ceiling = occupancy / stretch (both from the server's in-flight count, sampled "
                      "every 0.1 s, and Little's law)")

    cores = os.cpu_count() or 1
    jobs_done = max(1, pipe["succeeded"])
    cpu = Figure(f"CPU during the pipeline run ({cores} cores)", ["process group", "CPU s", "cores used",
                                                                  "CPU s per job", "cores needed at the ceiling"])
    for name, seconds in sorted(seen["cpu_s"].items(), key=lambda kv: -kv[1]):
        cpu.add(name, f"{seconds:.1f}", f"{seconds / seen['cpu_wall_s']:.2f}", f"{seconds / jobs_done:.3f}",
                f"{seconds / jobs_done * ceiling:.2f}")
    total_cpu = sum(seen["cpu_s"].values())
    cpu.add("all of the above", f"{total_cpu:.1f}", f"{total_cpu / seen['cpu_wall_s']:.2f}",
            f"{total_cpu / jobs_done:.3f}", f"{total_cpu / jobs_done * ceiling:.2f}")
    cpu.add("whole machine, other load included", None, f"{seen['machine_busy_cores']:.2f}", None,
            f"{cores} available")
    cpu.notes.append("cores needed at the ceiling = CPU s per job x N / mean(L); above the cores available, the "
                     "ceiling cannot be reached on this machine, whatever the client does")
    cpu.notes.append("per-stage means (s): " + ", ".join(f"{k} {v:.3f}" for k, v in pipe["stage_means_s"].items()))

    compare = Figure("Beside the baselines (same server, same inputs, same latency model)",
                     ["client", "jobs", "ok", "failed", "429s", "wall s", "jobs/s", "/ ceiling", "occupancy",
                      "stretch", "client CPU s/job", "server CPU s/job", "pipeline is x faster"])
    arms = [(f"pipeline ({shape}, shared limiter)", pipe["jobs"],
             pipe["succeeded"], pipe["failed"] + unfinished, seen, server, pipe["wall_s"])]
    if sdk:
        arms.append(("vendor SDK, sequential loop", sdk["jobs"], sdk["ok"], sdk["failed"], sdk["observed"],
                     sdk["server"], sdk["wall_s"]))
    if naive:
        arms.append((f"naive Celery, rate_limit={naive['rate_limit']} per worker ({naive['workers']}x"
                     f"{naive['concurrency']})", naive["jobs"], naive["ok"], naive["failed"] + naive["unfinished"],
                     naive["observed"], naive["server"], naive["wall_s"]))
    for name, jobs, ok, failed, observed, stats, wall_s in arms:
        arm_rate = ok / wall_s if wall_s else 0.0
        compare.add(name, jobs, ok, failed, stats["requests_by_status"].get("429", 0), round(wall_s, 1),
                    round(arm_rate, 3), pct(arm_rate / ceiling), pct(observed["occupancy"]),
                    f"{observed['stretch']:.2f}", f"{_client_cpu_s(observed) / max(1, ok):.2f}",
                    f"{observed['cpu_s']['offline STS server'] / max(1, ok):.2f}",
                    f"{rate / arm_rate:.2f}" if arm_rate else None)
    compare.notes.append("client CPU: workers (or this process, for the SDK loop) and redis; the offline server and "
                         "S3 stand in for remote services but share these cores, so on a CPU-bound machine every "
                         "CPU second a client spends is taken from the server")
    if sdk:
        sdk_rate = sdk["ok"] / sdk["wall_s"] if sdk["wall_s"] else 0.0
        sdk_ceiling = 1 / mean(model.seconds(s) for s in sdk["audio_s"]) if sdk["audio_s"] else 0.0
        compare.notes.append(f"a sequential loop's own ceiling is 1 / mean(L) = {sdk_ceiling:.3f} jobs/s; "
                             f"it reached {pct(sdk_rate / sdk_ceiling) if sdk_ceiling else '-'} of that")
    if naive:
        compare.notes.append(
            f"naive: {naive['retried']} retries after 429/5xx, {naive['failed']} jobs failed after "
            f"{NAIVE_RETRIES} retries, {naive['unfinished']} unfinished when the {naive_timeout_s:.0f} s bound "
            f"hit; server max in flight {naive['server']['max_in_flight']} (cap {cap}, rejected above it)")
    return [main, cpu, compare]


def _unit(pool: str) -> str:
    return "threads" if pool == "threads" else "processes"


def headlines(pipe: dict[str, Any], sdk: dict[str, Any]) -> list[Headline]:
    ceiling = CAP / mean(pipe["model_l_s"]) if pipe["model_l_s"] else 0.0
    ratio = pipe["succeeded"] / pipe["wall_s"] / ceiling if ceiling else 0.0
    seen = pipe["observed"]
    rows = [Headline("throughput / ceiling N / mean(L)", pct(ratio), f">= {pct(GOAL_RATIO)}, 0 failures",
                     ratio >= GOAL_RATIO and pipe["failed"] == 0 and pipe["succeeded"] == pipe["jobs"]),
            Headline("= occupancy of the cap (the client's part)", pct(seen["occupancy"]), "-"),
            Headline("/ stretch of request time over the model (the server's part)", f"{seen['stretch']:.2f}",
                     "1.00")]
    if sdk and sdk["ok"]:
        speedup = pipe["succeeded"] / pipe["wall_s"] / (sdk["ok"] / sdk["wall_s"])
        rows.append(Headline("pipeline vs sequential SDK loop", f"{speedup:.2f}x", f"about N = {CAP}x"))
    return rows


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--recordings", type=int, default=20, help="distinct recordings the jobs' inputs copy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4, help="processes per worker")
    parser.add_argument("--sdk-jobs", type=int, default=6, help="an even number keeps the batch's mean duration")
    parser.add_argument("--naive-jobs", type=int, default=30)
    parser.add_argument("--naive-timeout-s", type=float, default=60.0)
    parser.add_argument("--fixed-s", type=float, default=0.5, help="latency model: seconds per request")
    parser.add_argument("--per-audio-s", type=float, default=0.2, help="latency model: seconds per audio second")
    args = parser.parse_args(argv)
    model = LatencyModel(args.fixed_s, args.per_audio_s)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        workdir = Path(tmp)
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--max-concurrent", str(CAP), *model.server_args())
        client = s3_client(stack)
        client.create_bucket(Bucket=BUCKET)
        batch = make_batch(client, workdir, args.jobs, args.recordings, 10.0, 30.0)
        ideal_s = args.jobs * model.seconds(20.0) / CAP
        pipe = run_pipeline(stack, Storage(client), batch, workdir, model=model, workers=args.workers,
                            processes=args.processes, timeout_s=3 * ideal_s + 60)
        reset_server_stats(stack.sts_url)
        sdk = sdk_loop(stack, batch[:args.sdk_jobs], output_prefix=f"s3://{BUCKET}/sdk/", output_format=OUTPUT_FORMAT,
                       model=model, cap=CAP, timeout_s=args.sdk_jobs * model.seconds(30.0)) \
            if args.sdk_jobs else {}
        reset_server_stats(stack.sts_url)
        per_minute = int(60 * CAP / model.seconds(20.0))
        naive = naive_workers(stack, batch[:args.naive_jobs], output_prefix=f"s3://{BUCKET}/naive/",
                              output_format=OUTPUT_FORMAT, rate_limit=f"{per_minute}/m", workers=2,
                              concurrency=CAP, model=model, cap=CAP, timeout_s=args.naive_timeout_s) \
            if args.naive_jobs else {}
    result = BenchResult("throughput", figures(pipe, sdk, naive, model, naive_timeout_s=args.naive_timeout_s),
                         headlines(pipe, sdk),
                         raw={"pipeline": pipe, "sdk": sdk, "naive": naive, "args": vars(args)})
    return result.finish(started)


if __name__ == "__main__":
    main()
