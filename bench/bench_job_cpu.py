"""Where one job's client CPU goes: the Python process and every ffmpeg/ffprobe it starts, by the pipeline function
that started it.

    python -m bench.bench_job_cpu [--input-s 20] [--jobs 3] [--output-format mp3_44100_128]

``bench_client`` finds ~0.38 CPU-s per 20-s job in the workers and their children. This runs 20-s jobs in process
(``run_job`` with a worker's context, as ``bench_overhead`` does) against ``serve-local --engine light``, after one
warm-up job, with ``subprocess.Popen`` wrapped so each child's own CPU (``os.wait4``'s rusage) is recorded with its
program, its output kind and the first pipeline frame that started it; a cProfile of the Python part (HTTP call
excluded; its timer is process CPU) gives the top functions by own time. Figures are means per job. What is read
in process (``pipeline.audio.native``: WAV inputs, mp3 and headerless outputs) is in the Python row; a note says
how much of the profiled job's CPU it took.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import subprocess
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import bench_overhead
from bench.bench_overhead import API_KEY, BUCKET, MODEL, in_process, profile_tables
from bench.common import Lane, s3_client, upload_files
from bench.report import BenchResult, Figure, pct
from pipeline.config import get_settings
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack

#: (caller, what) -> [invocations, CPU s]
Children = dict[tuple[str, str], list[float]]


def _what(argv: list[str]) -> str:
    """What a child does, from its command line: a probe, a decode to null (a check), a decode to a pipe, an
    encode."""
    program = Path(argv[0]).name
    if program == "ffprobe":
        return "ffprobe"
    if "null" in argv:
        return "ffmpeg decode -> null"
    if "pipe:1" in argv or "-" == argv[-1]:
        return "ffmpeg decode -> pipe"
    return "ffmpeg encode/convert -> file"


def _caller() -> str:
    """The innermost pipeline frame outside the ffmpeg boundary."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/pipeline/" in frame.filename and not frame.filename.endswith("audio/ffmpeg.py"):
            return f"{frame.filename.split('/pipeline/')[-1]}:{frame.lineno} {frame.name}"
    return "?"


@contextmanager
def recorded_children() -> Iterator[Children]:
    """Every ``subprocess.Popen`` started in the block, with its own CPU once waited for."""
    seen: Children = defaultdict(lambda: [0.0, 0.0])
    original = subprocess.Popen

    class Recorded(original):  # type: ignore[misc,valid-type]
        def __init__(self, argv: list[str], *args: Any, **kwargs: Any) -> None:
            self._key = (_caller(), _what([str(a) for a in argv]))
            super().__init__(argv, *args, **kwargs)

        def _try_wait(self, wait_flags: int) -> tuple[int, int]:
            try:
                pid, status, usage = os.wait4(self.pid, wait_flags)
            except ChildProcessError:
                return self.pid, 0
            if pid == self.pid:
                entry = seen[self._key]
                entry[0] += 1
                entry[1] += usage.ru_utime + usage.ru_stime
            return pid, status

    subprocess.Popen = Recorded  # type: ignore[misc]
    try:
        yield seen
    finally:
        subprocess.Popen = original  # type: ignore[misc]


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def measure(jobs: int) -> tuple[dict[str, Any], Children]:
    """Run ``jobs`` jobs after a warm-up; Python CPU, children CPU and HTTP time summed over them."""
    in_process(0, "warmup", None)
    totals = {"python_cpu_s": 0.0, "children_cpu_s": 0.0, "wall_s": 0.0, "http_s": 0.0}
    with recorded_children() as children:
        for n in range(1, jobs + 1):
            own0, kids0 = _cpu()
            run = in_process(n, "measured", None)
            own1, kids1 = _cpu()
            assert run["state"] == "succeeded", run
            totals["python_cpu_s"] += own1 - own0
            totals["children_cpu_s"] += kids1 - kids0
            totals["wall_s"] += run["wall_s"]
            totals["http_s"] += run["http_s"]
    return totals, children


def figures(totals: dict[str, Any], children: Children, profiler: cProfile.Profile, jobs: int,
            input_s: float, output_format: str) -> list[Figure]:
    per_job = {k: v / jobs for k, v in totals.items()}
    total = per_job["python_cpu_s"] + per_job["children_cpu_s"]
    where = Figure(f"Client CPU of one {input_s:.0f}-s job (wav -> {output_format}), in process against the light "
                   f"engine (mean of {jobs})", ["what", "started by", "runs per job", "CPU s per job", "share"])
    where.add("Python: the job's own process (HTTP call included)", "-", None,
              round(per_job["python_cpu_s"], 3), pct(per_job["python_cpu_s"] / total))
    for (caller, what), (count, cpu_s) in sorted(children.items(), key=lambda kv: -kv[1][1]):
        where.add(what, caller, round(count / jobs, 2), round(cpu_s / jobs, 3), pct(cpu_s / jobs / total))
    where.add("all", "-", None, round(total, 3), "100 %")
    where.notes.append(f"wall per job {per_job['wall_s']:.2f} s, of which the HTTP call {per_job['http_s']:.2f} s; "
                       f"children's CPU by os.wait4 sums to {sum(c for _, c in children.values()) / jobs:.3f} s "
                       f"of RUSAGE_CHILDREN's {per_job['children_cpu_s']:.3f} s")
    profiled_s = sum(row[3] for row in _own_rows(profiler))
    reading_s = _native_cpu_s(profiler)
    where.notes.append(f"in-process reading (pipeline.audio.native: probe, count, length check, the measure's "
                       f"decode) is in the Python row: {reading_s:.3f} s of the profiled job's {profiled_s:.3f} s "
                       f"outside the HTTP call ({pct(reading_s / profiled_s) if profiled_s else '-'}; cProfile's "
                       f"own overhead included)")
    ours, own = profile_tables(profiler, profiled_s)
    return [where, ours, own]


def _native_cpu_s(profiler: cProfile.Profile) -> float:
    """Process CPU the profiled job spent in ``pipeline.audio.native``'s public functions (cumulative: libsndfile's
    reads and the numpy work inside them; the profiler's timer is process time)."""
    stats = __import__("pstats").Stats(profiler).stats
    public = ("read_header", "count_wav_s", "output_samples", "_mp3_blocks", "_raw_blocks")
    return sum(cumulative for (file, _, func), (_, _, _, cumulative, _) in stats.items()
               if file.endswith("audio/native.py") and func in public)


def _own_rows(profiler: cProfile.Profile) -> list[tuple[Any, ...]]:
    stats = __import__("pstats").Stats(profiler).stats
    return [(f, ln, fn, own) for (f, ln, fn), (_, _, own, _, _) in stats.items()]


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-s", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--output-format", default=bench_overhead.OUTPUT_FORMAT)
    args = parser.parse_args(argv)
    bench_overhead.OUTPUT_FORMAT = args.output_format  # the jobs' manifest lines (bench_overhead._line) read it
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-job-cpu-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        stack.start_redis()
        stack.start_s3()
        stack.start_sts("--engine", "light", "--max-concurrent", "5", *MODEL.server_args())
        client = s3_client(stack)
        client.create_bucket(Bucket=BUCKET)
        count = args.jobs + 2
        files = [write_speech_like(Path(tmp) / f"in-{n}.wav", args.input_s, seed=n) for n in range(count)]
        upload_files(client, [(path, f"s3://{BUCKET}/in/{n}.wav") for n, path in enumerate(files)])
        lane = Lane(stack, "bench-job-cpu", API_KEY, {"STS_MAX_CONCURRENT_REQUESTS": "5"})
        with stack.applied():
            os.environ.update({k: v for k, v in lane.env().items() if k.startswith("STS_")})
            get_settings.cache_clear()
            totals, children = measure(args.jobs)
            profiler = cProfile.Profile(time.process_time)
            in_process(args.jobs + 1, "profiled", profiler)
            get_settings.cache_clear()
    name = "job_cpu" if args.output_format == "mp3_44100_128" else f"job_cpu_{args.output_format}"
    result = BenchResult(name, figures(totals, children, profiler, args.jobs, args.input_s, args.output_format),
                         raw={"totals": totals, "children": {f"{c} | {w}": v for (c, w), v in children.items()}})
    return result.finish(started)


if __name__ == "__main__":
    main()
