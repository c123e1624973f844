"""Long recordings, wall time: a 60-minute input through the pipeline in segments under N slots, against one request
for the whole file.

    python -m bench.bench_long_wall [--minutes 60] [--whole] [--engine light|world]

Same latency model as the throughput benchmark (L = 0.5 s + 0.2 s per second of audio), cap N = 5, against the
offline server's light engine by default (``--engine world`` for its WORLD conversion, whose CPU, about 1.2 of this
machine's 2 cores during the job, stretches the requests beyond the model and so measures the simulator as much as
the client). The segmented
job (``pipeline/conversion/longform.py``: default 300 s segments cut at pauses, ``STS_SEGMENT_WORKERS`` = N) is
measured from enqueue to commit. One request for the whole file takes at least 0.5 + 0.2 x 3600 = 720.5 s by the
model, which alone is most of ``make bench``'s budget, so it is only run with ``--whole`` (the same pipeline with
``STS_MAX_SEGMENT_SECONDS`` above the input's length, the server's input limits raised); otherwise its floor is
shown: the larger of the model's L and the server's CPU time for the whole file (one request's blocks are converted
one after another).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    VOICE_IDS,
    CpuMeter,
    InFlightSampler,
    Lane,
    LatencyModel,
    epoch,
    read_records,
    s3_client,
    upload_files,
)
from bench.report import BenchResult, Figure, Headline, pct
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from pipeline.storage.s3 import Storage

CAP = 5
MODEL = LatencyModel(fixed_s=0.5, per_audio_s=0.2)
BUCKET = "bench-long"
SEGMENT_S = 300.0
#: issue 20: the segmented wall at most this many times the longest-first schedule of the segments' model L on CAP slots
GOAL_RATIO = 1.10
PIECE_S = 300.0  # the input is this much generated speech, looped
OUTPUT_FORMAT = "mp3_44100_128"


def make_input(workdir: Path, minutes: float) -> Path:
    """A speech-like FLAC of ``minutes``: PIECE_S generated, looped by ffmpeg (generating an hour costs minutes)."""
    piece = write_speech_like(workdir / "piece.wav", PIECE_S, seed=11)
    out = workdir / "long.flac"
    loops = max(1, math.ceil(minutes * 60 / PIECE_S))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(piece), "-t",
                    str(minutes * 60), "-c:a", "flac", str(out)], check=True)
    piece.unlink()
    return out


def lpt_makespan_s(durations: list[float], slots: int) -> float:
    """Wall time of requests of these durations on ``slots`` slots, longest first (what a greedy client gets)."""
    finish = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        finish[finish.index(min(finish))] += duration
    return max(finish)


def run_job(stack: LocalStack, storage: Storage, workdir: Path, name: str, overrides: dict[str, str],
            timeout_s: float) -> dict[str, Any]:
    """Convert the long input as one job on one worker process; return its provenance and what the server saw."""
    lane = Lane(stack, f"bench-long-{name}", f"bench-long-{name}-key",
                {"STS_MAX_CONCURRENT_REQUESTS": str(CAP), **overrides})
    services = lane.start_workers(1, 1)
    line = {"input": f"s3://{BUCKET}/in/long.flac", "voice_id": VOICE_IDS[0], "seed": 1,
            "output": f"s3://{BUCKET}/out/{name}.mp3", "output_format": OUTPUT_FORMAT}
    manifest = workdir / f"{name}.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    meter = CpuMeter({"offline STS server": [stack.service("sts")], "worker (+ffmpeg)": services}).start()
    sampler = InFlightSampler(stack.sts_url, interval_s=0.5)
    sampler.start()
    try:
        run_id = lane.submit(manifest)
        counts = lane.wait(run_id, 1, timeout_s, poll_s=1.0)
    finally:
        sampler.stop()
        meter.stop()
    lane.stop_workers()
    record = read_records(storage, [line["output"]])[0]
    return {"counts": dict(counts), "provenance": record.provenance, "failure": record.failure,
            "cpu_s": meter.cpu_s, "cpu_wall_s": meter.wall_s, "machine_busy_cores": meter.machine_busy_cores,
            "max_in_flight": max((n for _, n in sampler.samples), default=0)}


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """Wall time, stages and requests of a finished long job."""
    record = run["provenance"]
    if record is None:
        return {"ok": False, "failure": (run["failure"] or {}).get("error"), "counts": run["counts"]}
    timings = record["timings"]
    segments = record.get("segments") or [{"duration_in_s": record["input"]["duration_s"]}]
    convert_from = epoch(timings["started_at"]) + timings["download_s"] + timings["prepare_s"]
    first = min(epoch(a["started_at"]) for a in record["attempts"])
    last = max(epoch(a["started_at"]) + a["duration_s"] for a in record["attempts"])
    return {"ok": True, "wall_s": timings["queue_wait_s"] + timings["total_s"], "timings": timings,
            "before_requests_s": first - convert_from, "requests_s": last - first,
            "after_requests_s": convert_from + timings["convert_s"] - last,
            "segments": len(segments), "segment_s": [s["duration_in_s"] for s in segments],
            "requests": len(record["attempts"]), "server_cpu_s": run["cpu_s"]["offline STS server"],
            "worker_cpu_s": run["cpu_s"]["worker (+ffmpeg)"], "max_in_flight": run["max_in_flight"],
            "ours_cores": sum(run["cpu_s"].values()) / run["cpu_wall_s"],
            "machine_busy_cores": run["machine_busy_cores"],
            "input_s": record["input"]["duration_s"]}


def figures(seg: dict[str, Any], whole: dict[str, Any] | None, minutes: float, engine: str) -> list[Figure]:
    table = Figure(f"A {minutes:.0f}-minute input through the pipeline, cap N = {CAP}, L = {MODEL.fixed_s} s + "
                   f"{MODEL.per_audio_s} s/s, {engine} engine", ["path", "requests", "wall s (enqueue -> commit)",
                                                 "model bound s", "wall / bound", "one request / this"])
    if not seg["ok"]:
        table.notes.append(f"the segmented job did not succeed: {seg}")
        return [table]
    seg_bound = lpt_makespan_s([MODEL.seconds(s) for s in seg["segment_s"]], CAP)
    whole_model = MODEL.seconds(seg["input_s"])
    cpu_floor = seg["server_cpu_s"]  # the same audio converted once, whatever the split
    whole_floor = max(whole_model, cpu_floor)
    whole_wall = whole["wall_s"] if whole and whole.get("ok") else None
    reference = whole_wall or whole_floor
    table.add(f"segmented: {seg['segments']} segments <= {SEGMENT_S:.0f} s, {CAP} at a time", seg["requests"],
              round(seg["wall_s"], 1), round(seg_bound, 1), round(seg["wall_s"] / seg_bound, 2),
              round(reference / seg["wall_s"], 2))
    table.add("one request for the whole file" + ("" if whole_wall else " (not run: floor shown)"), 1,
              round(whole_wall, 1) if whole_wall else None, round(whole_floor, 1),
              round(whole_wall / whole_floor, 2) if whole_wall else None, "1.0")
    timings = seg["timings"]
    table.notes.append("segmented job stages (s): " + ", ".join(
        f"{k} {timings[k]:.1f}" for k in ("queue_wait_s", "download_s", "prepare_s", "convert_s", "upload_s")))
    table.notes.append(f"inside convert_s: {seg['before_requests_s']:.1f} s before the first request (planning the "
                       f"cuts, cutting), {seg['requests_s']:.1f} s from the first request's start to the last one's "
                       f"end (each attempt includes its piece's quality measure), {seg['after_requests_s']:.1f} s "
                       "after it (stitching, the output's quality measure)")
    table.notes.append(f"segment lengths (s): {', '.join(f'{s:.0f}' for s in seg['segment_s'])}; "
                       f"server max in flight {seg['max_in_flight']}")
    table.notes.append(f"server CPU for the {seg['input_s']:.0f} s of audio: {seg['server_cpu_s']:.0f} s "
                       f"({seg['server_cpu_s'] / seg['input_s']:.3f} s per audio second); worker + ffmpeg CPU "
                       f"{seg['worker_cpu_s']:.0f} s; model bound of the segments = longest-first schedule of their "
                       f"L on {CAP} slots; the whole file's floor = max(model L {whole_model:.1f} s, "
                       f"server CPU {cpu_floor:.0f} s)")
    table.notes.append(f"CPU while the segmented job ran: {seg['ours_cores']:.2f} cores for the server, worker and "
                       f"ffmpeg; {seg['machine_busy_cores']:.2f} of {os.cpu_count()} cores busy on the machine")
    overhead = seg["wall_s"] - seg_bound
    table.notes.append(f"segmented wall beyond its model bound: {overhead:.1f} s ({pct(overhead / seg_bound)}): "
                       "download, decode checks, planning and cutting, stitching, the quality measure, upload")
    return [table]


def headlines(seg: dict[str, Any], whole: dict[str, Any] | None, minutes: float) -> list[Headline]:
    if not seg["ok"]:
        return [Headline(f"{minutes:.0f}-minute input, segmented", "failed", "succeeds", False)]
    measured = bool(whole and whole.get("ok"))
    reference = whole["wall_s"] if whole and measured else max(MODEL.seconds(seg["input_s"]), seg["server_cpu_s"])
    bound = lpt_makespan_s([MODEL.seconds(s) for s in seg["segment_s"]], CAP)
    return [Headline(f"{minutes:.0f}-minute input: segmented wall / the segments' model bound",
                     f"{seg['wall_s']:.0f} s / {bound:.0f} s = {seg['wall_s'] / bound:.3f}", f"<= {GOAL_RATIO:.2f}",
                     seg["wall_s"] / bound <= GOAL_RATIO),
            Headline("one request for the whole file" + ("" if measured else " (floor, not run)"),
                     f"{reference:.0f} s", "-"),
            Headline("speed-up of the segmented path", f"{reference / seg['wall_s']:.2f}x", "-")]


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--whole", action="store_true", help="also run one request for the whole file (12+ min)")
    parser.add_argument("--engine", choices=("light", "world"), default="light",
                        help="the offline server's conversion (default: light, the client's own figure)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-long-wall-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        workdir = Path(tmp)
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--engine", args.engine, "--max-concurrent", str(CAP), *MODEL.server_args(),
                        "--max-input-seconds", str(seconds + 60), "--max-input-bytes", str(1 << 30))
        client = s3_client(stack)
        client.create_bucket(Bucket=BUCKET)
        upload_files(client, [(make_input(workdir, args.minutes), f"s3://{BUCKET}/in/long.flac")])
        storage = Storage(client)
        waves = math.ceil((math.ceil(seconds / SEGMENT_S) + 1) / CAP)  # + 1: cuts at pauses come early
        bound_s = waves * MODEL.seconds(SEGMENT_S)
        seg = summary(run_job(stack, storage, workdir, "segmented",
                              {"STS_SEGMENT_WORKERS": str(CAP), "STS_MAX_SEGMENT_SECONDS": str(SEGMENT_S)},
                              timeout_s=2 * bound_s + 300))
        whole = summary(run_job(stack, storage, workdir, "whole", {"STS_MAX_SEGMENT_SECONDS": str(seconds + 60)},
                                timeout_s=2 * MODEL.seconds(seconds) + 300)) if args.whole else None
    result = BenchResult("long_wall", figures(seg, whole, args.minutes, args.engine),
                         headlines(seg, whole, args.minutes),
                         raw={"segmented": seg, "whole": whole, "args": vars(args)})
    return result.finish(started)


if __name__ == "__main__":
    main()
