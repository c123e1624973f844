"""``make bench``: every benchmark in sequence, each in its own process under a time bound.

    python -m bench.run_all [--only NAME ...] [--whole]

Each benchmark prints its tables as it finishes (plain Markdown) and leaves ``bench/out/<name>.json``. At the end
this prints a summary of the figures against their goals and writes ``bench/out/results.json`` (everything, with the
date and the machine) and ``bench/out/results.md`` (the same tables, ready for bench/RESULTS.md).

``bench/bench_long.py`` (peak memory of long recordings) is run as its own script; its table is read from its output.
A benchmark that overruns its bound gets SIGINT, so that its ``LocalStack`` stops the services it started, and
SIGKILL if it is still there a minute later.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure, machine, machine_markdown

BENCH_DIR = Path(__file__).resolve().parent
INTERRUPT_GRACE_S = 60.0


@dataclass(frozen=True)
class Bench:
    name: str
    argv: list[str]
    timeout_s: float
    own_json: bool = True  # writes bench/out/<name>.json (bench_long.py prints a table instead)


#: ``bench_throughput`` (the same clients against WORLD, the simulator's own CPU) runs alone: it measures the offline
#: server more than the client, and with it ``make bench`` would take more than 15 minutes
BENCHES = [
    Bench("client", ["-m", "bench.bench_client"], 900),
    Bench("overhead", ["-m", "bench.bench_overhead"], 240),
    # the moto-reconciled check run at 2,000 records, not 5,000: it checks the projection, and the time is moto's
    Bench("control_plane", ["-m", "bench.bench_control_plane", "--check-records", "2000"], 420),
    # a 60-minute input, not bench_long's default 3 hours (its peak memory is flat in the length: 242 MB RSS for 3 h
    # in bench/RESULTS.md), to keep make bench under 15 minutes
    Bench("long_rss", [str(BENCH_DIR / "bench_long.py"), "--seconds", "60", "3600"], 720, own_json=False),
    Bench("long_wall", ["-m", "bench.bench_long_wall"], 480),
    Bench("dataset", ["-m", "bench.bench_dataset"], 600),
]


def run(bench: Bench, extra: list[str]) -> tuple[int | None, str, float]:
    """Run one benchmark, echoing its output; return (exit code or None if it overran, its stdout, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, *bench.argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, cwd=BENCH_DIR.parent)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code: int | None
    try:
        code = proc.wait(timeout=bench.timeout_s)
    except subprocess.TimeoutExpired:
        print(f"\n[{bench.name} overran {bench.timeout_s:.0f} s: interrupting it]", flush=True)
        _interrupt(proc)
        code = None
    except KeyboardInterrupt:  # the benchmark runs in its own session: pass the interrupt on, then stop
        _interrupt(proc)
        raise
    reader.join(timeout=10)
    return code, "".join(lines), time.monotonic() - started


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """SIGINT the benchmark's process group (its LocalStack then stops its services); SIGKILL after a grace."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def long_rss_result(stdout: str) -> dict[str, Any]:
    """bench_long.py's ``a | b | c`` table and its closing line, as a figure."""
    rows = [line.split(" | ") for line in stdout.splitlines() if " | " in line]
    figure = Figure("Long recordings: peak memory (bench/bench_long.py)", rows[0] if rows else ["output"],
                    [list(row) for row in rows[1:]])
    figure.notes += [line for line in stdout.splitlines() if line.startswith("largest peak")]
    peak = next((line for line in figure.notes), "")
    met = None
    if "MB RSS" in peak:
        met = float(peak.split(":", 1)[1].split("MB RSS")[0]) <= 250.0
    return {"name": "long_rss", "figures": [figure.__dict__],
            "headlines": [{"figure": "largest peak RSS of the long-recording path",
                           "value": peak.split(":", 1)[-1].split(" (goal")[0].strip(), "goal": "<= 250 MB",
                           "met": met}]}


def summary(results: dict[str, dict[str, Any]], seconds: dict[str, float]) -> Figure:
    table = Figure("Summary", ["benchmark", "figure", "value", "goal", "met", "bench s"])
    for name, result in results.items():
        heads = result.get("headlines") or [{"figure": result.get("error", "no figures"), "value": "-", "goal": "-",
                                             "met": False}]
        for n, head in enumerate(heads):
            met = {True: "yes", False: "NO", None: "-"}[head.get("met")]
            table.add(name if n == 0 else "", head["figure"], head["value"], head["goal"], met,
                      round(seconds.get(name, 0.0)) if n == 0 else None)
    return table


def markdown_of(result: dict[str, Any]) -> str:
    return "\n".join(Figure(**figure).markdown() for figure in result.get("figures", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run just these")
    parser.add_argument("--whole", action="store_true", help="long_wall: also time one request for the whole file")
    args = parser.parse_args(argv)
    info = machine()
    print(machine_markdown(info), flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for bench in BENCHES:
        if args.only and bench.name not in args.only:
            continue
        print(f"\n=== {bench.name} ===\n", flush=True)
        own = OUT_DIR / f"{bench.name}.json"
        own.unlink(missing_ok=True)
        code, stdout, seconds[bench.name] = run(bench, ["--whole"] if args.whole and bench.name == "long_wall" else [])
        if code == 0 and bench.own_json and own.exists():
            results[bench.name] = json.loads(own.read_text())
        elif code == 0 and not bench.own_json:
            results[bench.name] = long_rss_result(stdout)
        else:
            why = "overran its time bound" if code is None else f"exited with {code}"
            results[bench.name] = {"name": bench.name, "error": f"{bench.name} {why}", "tail": stdout[-3000:]}
    total_s = time.monotonic() - started
    table = summary(results, seconds)
    print("\n" + table.markdown(), flush=True)
    print(f"total: {total_s / 60:.1f} min", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(
        {"machine": info, "total_s": total_s, "bench_s": seconds, "results": results}, indent=2, default=str) + "\n")
    (OUT_DIR / "results.md").write_text(
        f"### `make bench`, {info['date']}\n\n" + machine_markdown(info) + f"\n- total: {total_s / 60:.1f} min\n\n"
        + table.markdown() + "\n"
        + "\n".join(markdown_of(result) for result in results.values()))
    return 0 if all("error" not in result for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
