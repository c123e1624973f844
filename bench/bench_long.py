"""Peak memory of the long-recording path: plan, cut, stitch and measure a 1-minute and a 3-hour input.

    .venv/bin/python bench/bench_long.py [--seconds 60 10800] [--max-segment-s 300] [--workdir DIR]

Each input is generated with ``write_speech_like`` (16 kHz FLAC) in a temporary directory, then processed in a fresh
child process so the figures belong to that input alone. The pieces are cut as ``pcm_s16le_16`` and taken back as
the service returns them for the default output, mp3_44100_128 (an identity "conversion": each piece is made raw PCM
at 44.1 kHz, ``service_s``, one process at a time; each is deleted once stitched, as a job does),
then stitched into mp3_44100_128, encoded once, and measured as a segmented job does it: read back while it is
encoded (``Stitcher`` with a ``QualityMeter``; ``stitch_s`` includes the measure, not ``service_s``). ``measure_s``
is ``quality.measure`` of the finished file afterwards (what a whole-file job does), and ``lufs_diff`` how far the
two measures' loudness lie apart.

Memory figures: ``rss_self_mb`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the Python process (exact). ffmpeg children
are sampled from ``/proc`` every 20 ms: ``rss_ffmpeg_mb`` is the largest RSS of one seen; ``rss_tree_mb`` is the
largest RSS sum of the Python process and its ffmpeg children at one instant (counting the shared libraries of each
process in full) and ``pss_tree_mb`` the same sum in PSS (shared pages split between the processes that map them).
``RUSAGE_CHILDREN`` is no use here: a forked child's high-water mark includes the Python parent's pages from before
``exec``. Goal: at most 250 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.audio.decode import duration_s
from pipeline.audio.ffmpeg import PCM_S16LE_16_INPUT_ARGS, run_to_file
from pipeline.audio.quality import BLOCK_S, QualityMeter, measure
from pipeline.audio.segments import Stitcher, cut_segment, plan_segments
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import write_speech_like

OVERLAP_S = 0.05
GOAL_MB = 250.0


PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


class TreeRss(threading.Thread):
    """Samples the RSS of this process and its direct children (the ffmpeg processes) from /proc."""

    def __init__(self, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_tree_mb = 0.0
        self.peak_child_mb = 0.0
        self.peak_tree_pss_mb = 0.0
        self._halt = threading.Event()

    @staticmethod
    def _rss_mb(pid: str) -> float:
        try:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
        except (OSError, IndexError, ValueError):
            return 0.0  # the child exited between listing and reading

    @staticmethod
    def _pss_mb(pid: str) -> float:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return 0.0
        return next((int(line.split()[1]) / 1024 for line in text.splitlines() if line.startswith("Pss:")), 0.0)

    @staticmethod
    def _is_ffmpeg(pid: str) -> bool:
        # between fork and exec a child still shows the Python parent's pages; count it once it is ffmpeg
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "ffmpeg"
        except OSError:
            return False

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            children = [pid for task in Path("/proc/self/task").iterdir()
                        for pid in (task / "children").read_text().split() if self._is_ffmpeg(pid)]
            child_mb = [self._rss_mb(pid) for pid in children]
            self.peak_child_mb = max([self.peak_child_mb, *child_mb])
            self.peak_tree_mb = max(self.peak_tree_mb, self._rss_mb("self") + sum(child_mb))
            self.peak_tree_pss_mb = max(self.peak_tree_pss_mb,
                                        self._pss_mb("self") + sum(self._pss_mb(pid) for pid in children))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(source: Path, max_segment_s: float) -> dict[str, float]:
    """Plan, cut, stitch and measure ``source``; return timings, sizes and peak RSS (run in a fresh process)."""
    fmt = OUTPUT_FORMATS["mp3_44100_128"]
    piece_fmt = OUTPUT_FORMATS["pcm_44100"]
    workdir = source.parent / f"work-{source.stem}"
    workdir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    sampler = TreeRss()
    sampler.start()
    mark = time.monotonic()
    segments = plan_segments(source, max_segment_s=max_segment_s)
    timings["plan_s"] = time.monotonic() - mark
    mark = time.monotonic()
    pieces = [cut_segment(source, seg, workdir / f"seg-{seg.index:04d}", file_format="pcm_s16le_16",
                          overlap_s=OVERLAP_S) for seg in segments]
    timings["cut_s"] = time.monotonic() - mark
    out = workdir / "stitched.mp3"
    mark = time.monotonic()
    returned = [piece.with_suffix(".returned") for piece in pieces]
    for piece, back in zip(pieces, returned, strict=True):
        run_to_file(piece, back, input_args=PCM_S16LE_16_INPUT_ARGS,
                    output_args=["-ar", str(piece_fmt.sample_rate), "-c:a", "pcm_s16le", "-f", "s16le"])
        piece.unlink()
    timings["service_s"] = time.monotonic() - mark
    mark = time.monotonic()
    meter = QualityMeter(fmt)
    with Stitcher(segments, segment_format=piece_fmt, output_format=fmt, out=out, crossfade_s=OVERLAP_S,
                  on_output=meter.add, output_block_s=BLOCK_S) as stitcher:
        for back in returned:
            stitcher.add(back)
            back.unlink()
    streamed = meter.report(input_duration_s=segments[-1].end_s)
    timings["stitch_s"] = time.monotonic() - mark
    self_mb, child_mb = _self_peak_mb(), sampler.peak_child_mb
    tree_mb, tree_pss_mb = sampler.peak_tree_mb, sampler.peak_tree_pss_mb
    mark = time.monotonic()
    report = measure(out, output_format=fmt, input_duration_s=segments[-1].end_s)
    timings["measure_s"] = time.monotonic() - mark
    sampler.stop()
    return {
        **{k: round(v, 1) for k, v in timings.items()},
        "segments": len(segments),
        "shortest_segment_s": round(min(s.duration_s for s in segments), 2),
        "longest_segment_s": round(max(s.duration_s for s in segments), 2),
        "input_s": segments[-1].end_s,
        "output_s": duration_s(out),
        "drift_ms": round(streamed.drift_ms, 3),
        "lufs_diff": round(abs((streamed.lufs or 0.0) - (report.lufs or 0.0)), 4),
        "rss_self_mb": round(self_mb, 1),
        "rss_ffmpeg_mb": round(child_mb, 1),
        "rss_tree_mb": round(tree_mb, 1),
        "pss_tree_mb": round(tree_pss_mb, 1),
        "rss_self_with_measure_mb": round(_self_peak_mb(), 1),
        "rss_tree_with_measure_mb": round(sampler.peak_tree_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 10800.0])
    parser.add_argument("--max-segment-s", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # child mode: process one generated input
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args.max_segment_s)))
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-long-") as tmp:
        for seconds in args.seconds:
            source = Path(tmp) / f"speech-{int(seconds)}s.flac"
            mark = time.monotonic()
            write_speech_like(source, seconds)
            generated_s = time.monotonic() - mark
            child = subprocess.run([sys.executable, __file__, "--run", str(source),
                                    "--max-segment-s", str(args.max_segment_s)],
                                   capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"the run on {seconds} s failed:\n{child.stderr}")
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append({"seconds": seconds, "input_mb": round(source.stat().st_size / 1e6, 1),
                         "generate_s": round(generated_s, 1), **row})
            source.unlink()
    columns = ["seconds", "input_mb", "segments", "shortest_segment_s", "longest_segment_s", "plan_s", "cut_s",
               "service_s", "stitch_s", "measure_s", "output_s", "drift_ms", "lufs_diff", "rss_self_mb",
               "rss_ffmpeg_mb", "rss_tree_mb", "pss_tree_mb", "rss_self_with_measure_mb", "rss_tree_with_measure_mb"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    worst_rss = max(r["rss_tree_with_measure_mb"] for r in rows)
    worst_pss = max(r["pss_tree_mb"] for r in rows)
    print(f"largest peak of the process tree: {worst_rss:.1f} MB RSS, {worst_pss:.1f} MB PSS "
          f"(goal <= {GOAL_MB:.0f} MB)")


if __name__ == "__main__":
    main()
