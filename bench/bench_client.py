"""The client alone: the pipeline, the SDK loop and naive Celery against the light engine, at N = 5 and at N = 50.

    python -m bench.bench_client [--jobs 300] [--n50-jobs 2000] [--only 5|50]

``bench_throughput`` runs against WORLD, whose conversion needs about 1.7 CPU-s per 20-s job: at the plan's ceiling
that is most of a 2-core machine, so its figures measure the simulator. Here the offline server runs
``--engine light`` (a gain and a polarity flip, ~1 % of a core per real-time stream) and the latency model alone
provides the request time, as the real service's own machines would. What remains is the client: throughput as a
ratio of N / mean(L), client CPU per 20-s job (the workers' whole process trees, ffmpeg children included), and the
workers' memory (peak RSS and PSS of all their processes together).

Two settings, one after the other on the same server (its cap and latency knobs are changed between them), each
with the three clients side by side on the same inputs and latency model:

- **N = 5**: mp3_44100_128 out (the API's default), L = 0.25 s + 0.1 s/s (mean 2.25 s for clips of 10-30 s), 300
  jobs, the pipeline in threads mode (1 worker x 10: jobs beyond the cap wait on the limiter, ready to start,
  woken by the next release; one process, as 5 requests in flight need no more);
- **N = 50**: pcm_16000 out, L = 0.4 s + 0.2 s/s (mean 4.4 s), 2,000 jobs, threads (2 workers x 30).

Why these latency models: on 2 cores every CPU second the stand-ins for remote services spend (the offline server,
moto, redis) is taken from the client, so the request rate N / mean(L) must leave the machine room, and the
ratio's losses at the edges (ramp-up, the last wave draining: about N / (2 x jobs) of the run) shrink with the
number of jobs, not with L. N = 50 uses a headerless output so that the server does not start an ffmpeg encoder for
each of ~9 requests a second. The figures are ratios to the bound of the model each setting uses.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

import httpx

from bench import bench_throughput as throughput
from bench.baselines import naive_workers, sdk_loop
from bench.common import BatchJob, LatencyModel, reset_server_stats, s3_client
from bench.memory import PeakMemory, own
from bench.report import BenchResult, Figure, Headline, pct
from pipeline.local.services import LocalStack
from pipeline.storage.s3 import Storage

BUCKET = throughput.BUCKET
GOAL_CPU_PER_20S = 0.12
GOAL_RSS_MB_AT_50 = 1536.0
REFERENCE_S = 20.0
#: the account's credits for each setting: 2,000 jobs of 20 s are ~670,000, more than any plan's month but business's
CREDITS = 50_000_000


@dataclass(frozen=True)
class Setting:
    """One cap with its latency model, output format and the size of each client's arm."""

    cap: int
    model: LatencyModel
    output_format: str
    jobs: int
    workers: int
    per_worker: int
    pool: str
    sdk_jobs: int
    naive_jobs: int
    naive_pool: str
    goal: float

    @property
    def name(self) -> str:
        return f"n{self.cap}"


SETTINGS = {
    5: Setting(5, LatencyModel(0.25, 0.1), "mp3_44100_128", jobs=300, workers=1, per_worker=10, pool="threads",
               sdk_jobs=6, naive_jobs=40, naive_pool="prefork", goal=0.98),
    50: Setting(50, LatencyModel(0.4, 0.2), "pcm_16000", jobs=2000, workers=2, per_worker=30, pool="threads",
                sdk_jobs=2, naive_jobs=100, naive_pool="threads", goal=0.95),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, choices=sorted(SETTINGS), action="append",
                        help="run only this cap's setting (repeatable)")
    parser.add_argument("--jobs", type=int, help=f"jobs at N = 5 (default {SETTINGS[5].jobs})")
    parser.add_argument("--n50-jobs", type=int, help=f"jobs at N = 50 (default {SETTINGS[50].jobs})")
    parser.add_argument("--pool", choices=("prefork", "threads"), help="the pipeline's pool at N = 5")
    parser.add_argument("--recordings", type=int, default=20)
    parser.add_argument("--naive-timeout-s", type=float, default=45.0)
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> list[Setting]:
    chosen = [SETTINGS[cap] for cap in (args.only or sorted(SETTINGS))]
    out = []
    for setting in chosen:
        if setting.cap == 5:
            setting = replace(setting, jobs=args.jobs or setting.jobs, pool=args.pool or setting.pool)
        if setting.cap == 50 and args.n50_jobs:
            setting = replace(setting, jobs=args.n50_jobs)
        out.append(setting)
    return out


def _per_20s(cpu_s: float, jobs: int, audio_s: list[float]) -> float:
    """CPU seconds per job, scaled to a 20-s input (the batches' mean is 20 s; a subset's may differ a little)."""
    return cpu_s / max(1, jobs) * REFERENCE_S / (mean(audio_s) if audio_s else REFERENCE_S)


def _is_pipeline_worker(name: str) -> bool:
    """The pipeline's workers: every service but the stand-ins for remote services and the naive baseline."""
    return name not in ("sts", "s3", "redis") and not name.startswith("naive")


def _use(stack: LocalStack, setting: Setting) -> None:
    """Give the one server this setting's cap and latency model (the admin knobs; nothing else changes)."""
    knobs = {"max_concurrent": setting.cap, "latency_fixed_s": setting.model.fixed_s,
             "latency_per_audio_second_s": setting.model.per_audio_s}
    httpx.put(f"{stack.sts_url}/_admin/faults", json=knobs, timeout=5).raise_for_status()
    account = {"tier": "business", "credits_limit": CREDITS, "credits_used": 0}  # the preflight checks the credits
    httpx.put(f"{stack.sts_url}/_admin/account", json=account, timeout=5).raise_for_status()
    reset_server_stats(stack.sts_url)


def _arms(stack: LocalStack, setting: Setting, batch: list[BatchJob], workdir: Path,
          naive_timeout_s: float) -> dict[str, Any]:
    """The three clients one after another on this setting; memory sampled per arm."""
    _use(stack, setting)
    model, storage = setting.model, Storage(s3_client(stack))
    jobs = batch[:setting.jobs]
    with PeakMemory(stack, _is_pipeline_worker) as seen:
        pipe = throughput.run_pipeline(stack, storage, jobs, workdir, model=model, workers=setting.workers,
                                       processes=setting.per_worker, cap=setting.cap, pool=setting.pool,
                                       output_format=setting.output_format, name=f"client-{setting.name}",
                                       timeout_s=3 * len(jobs) * model.seconds(20.0) / setting.cap + 60)
    memory: dict[str, Any] = {"pipeline": seen.peak.__dict__, "sdk": None, "naive": None}
    sdk = naive = {}
    if setting.sdk_jobs:
        reset_server_stats(stack.sts_url)
        sdk = sdk_loop(stack, batch[:setting.sdk_jobs], output_prefix=f"s3://{BUCKET}/sdk-{setting.name}/",
                       output_format=setting.output_format, model=model, cap=setting.cap,
                       timeout_s=setting.sdk_jobs * model.seconds(30.0))
        memory["sdk"] = own().__dict__
    if setting.naive_jobs:
        reset_server_stats(stack.sts_url)
        with PeakMemory(stack, lambda name: name.startswith("naive")) as seen:  # each worker as if it were alone
            naive = naive_workers(stack, batch[:setting.naive_jobs],
                                  output_prefix=f"s3://{BUCKET}/naive-{setting.name}/",
                                  output_format=setting.output_format, pool=setting.naive_pool,
                                  rate_limit=f"{int(60 * setting.cap / model.seconds(20.0))}/m", workers=2,
                                  concurrency=setting.cap, model=model, cap=setting.cap, timeout_s=naive_timeout_s)
        memory["naive"] = seen.peak.__dict__
    return {"setting": setting, "pipeline": pipe, "sdk": sdk, "naive": naive, "memory": memory,
            "audio": {job.index: job.audio_s for job in jobs}}


def client_figure(arms: dict[str, Any]) -> Figure:
    """One row per client: throughput over its bound, client CPU per 20-s job, peak memory of its processes."""
    setting: Setting = arms["setting"]
    pipe, sdk, naive, memory = arms["pipeline"], arms["sdk"], arms["naive"], arms["memory"]
    ceiling = setting.cap / mean(pipe["model_l_s"])
    figure = Figure(f"The client at N = {setting.cap} against the light engine ({setting.output_format}, L = "
                    f"{setting.model.fixed_s} s + {setting.model.per_audio_s} s/s; same server, inputs and model)",
                    ["client", "jobs ok / failed", "429s", "jobs/s", "/ N / mean(L)", "client CPU-s per 20-s job",
                     "of which", "peak RSS MB (processes)", "peak PSS MB"])
    audio = list(arms["audio"].values())
    cpu = pipe["observed"]["cpu_s"]
    rows = [(f"pipeline ({pipe['workers']}x{pipe['processes']} {setting.pool})", pipe["succeeded"], pipe["failed"],
             pipe["server"], pipe["wall_s"], cpu.get("workers (+ffmpeg)", 0.0), "workers + ffmpeg",
             memory["pipeline"], audio)]
    if sdk:
        rows.append(("vendor SDK, sequential loop", sdk["ok"], sdk["failed"], sdk["server"], sdk["wall_s"],
                     sdk["observed"]["cpu_s"].get("bench process", 0.0), "the loop's process", memory["sdk"],
                     sdk["audio_s"]))
    if naive:
        rows.append((f"naive Celery ({naive['workers']}x{naive['concurrency']} {naive['pool']}, rate_limit "
                     f"{naive['rate_limit']})", naive["ok"], naive["failed"] + naive["unfinished"], naive["server"],
                     naive["wall_s"], naive["observed"]["cpu_s"].get("naive workers", 0.0), "workers + children",
                     memory["naive"], audio[:naive["jobs"]]))
    for name, ok, failed, stats, wall_s, cpu_s, which, mem, arm_audio in rows:
        rate = ok / wall_s if wall_s else 0.0
        figure.add(name, f"{ok} / {failed}", stats["requests_by_status"].get("429", 0), round(rate, 3),
                   pct(rate / ceiling), f"{_per_20s(cpu_s, ok, arm_audio):.3f}", which,
                   f"{mem['rss_mb']:.0f} ({mem['processes']})" if mem else "-",
                   f"{mem['pss_mb']:.0f}" if mem else "-")
    figure.notes.append(f"N / mean(L) = {setting.cap} / {mean(pipe['model_l_s']):.2f} s = {ceiling:.3f} jobs/s "
                        f"(the pipeline's batch); the SDK loop's own bound is 1 / mean(L), {pct(1 / setting.cap)} "
                        f"of it")
    figure.notes.append("RSS counts pages forked children share once per process; PSS splits them (what the "
                        "group costs). The SDK loop's figure is this benchmark process, harness included")
    return figure


def headlines(arms: dict[str, Any]) -> list[Headline]:
    setting: Setting = arms["setting"]
    pipe, mem = arms["pipeline"], arms["memory"]["pipeline"]
    ratio = pipe["succeeded"] / pipe["wall_s"] / (setting.cap / mean(pipe["model_l_s"]))
    cpu = _per_20s(pipe["observed"]["cpu_s"].get("workers (+ffmpeg)", 0.0), pipe["succeeded"],
                   list(arms["audio"].values()))
    ok = pipe["failed"] == 0 and pipe["succeeded"] == pipe["jobs"] and pipe["server"]["requests_by_status"].get(
        "429", 0) == 0
    rows = [Headline(f"light engine, N = {setting.cap}: throughput / N / mean(L)", pct(ratio),
                     f">= {pct(setting.goal)}, 0 failed, 0 429s", ratio >= setting.goal and ok),
            Headline(f"N = {setting.cap}: client CPU-s per 20-s job ({setting.output_format}, workers + ffmpeg)",
                     f"{cpu:.3f}", f"<= {GOAL_CPU_PER_20S}" if setting.cap == 5 else "-",
                     cpu <= GOAL_CPU_PER_20S if setting.cap == 5 else None)]
    memory = f"RSS {mem['rss_mb']:.0f} MB, PSS {mem['pss_mb']:.0f} MB, {mem['processes']} processes"
    if setting.cap == 50:
        rows.append(Headline(f"workers' peak memory, {pipe['server']['max_in_flight']} in flight", memory,
                             f"<= {GOAL_RSS_MB_AT_50:.0f} MB RSS at 50", mem["rss_mb"] <= GOAL_RSS_MB_AT_50
                             and pipe["server"]["max_in_flight"] >= 50))
    else:
        rows.append(Headline(f"workers' peak memory, N = {setting.cap}", memory, "-"))
    return rows


def main(argv: list[str] | None = None) -> BenchResult:
    args = _parse(argv)
    settings = _settings(args)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--engine", "light", "--max-concurrent", str(settings[0].cap),
                        *settings[0].model.server_args())
        client = s3_client(stack)
        client.create_bucket(Bucket=BUCKET)
        batch = throughput.make_batch(client, Path(tmp), max(s.jobs for s in settings), args.recordings, 10.0, 30.0)
        for setting in settings:
            results.append(_arms(stack, setting, batch, Path(tmp), args.naive_timeout_s))
    figures = []
    for arms in results:
        figures += [client_figure(arms), *throughput.figures(arms["pipeline"], arms["sdk"], arms["naive"],
                                                             arms["setting"].model,
                                                             naive_timeout_s=args.naive_timeout_s,
                                                             goal=arms["setting"].goal)]
    result = BenchResult("client", figures, [row for arms in results for row in headlines(arms)],
                         raw={arms["setting"].name: {k: v for k, v in arms.items() if k != "setting"}
                              | {"setting": {**arms["setting"].__dict__, "model": arms["setting"].model.__dict__}}
                              for arms in results} | {"args": vars(args)})
    return result.finish(started)


if __name__ == "__main__":
    main()
