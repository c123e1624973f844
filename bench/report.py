"""Figure tables the benchmarks print (plain Markdown, ready to paste into bench/RESULTS.md) and save as JSON.

Each benchmark returns a ``BenchResult``: its tables plus the raw numbers behind them. ``save`` writes it to
``bench/out/<name>.json``; ``bench.run_all`` gathers those files into ``bench/out/results.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"

Cell = str | int | float | None


@dataclass
class Figure:
    """One table: a title, column names, rows, and notes printed under it."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [f"#### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Headline:
    """One figure against its goal, for the summary ``bench.run_all`` prints last."""

    figure: str
    value: str
    goal: str
    met: bool | None = None  # None: no goal to meet, or not measured


@dataclass
class BenchResult:
    """What one benchmark measured."""

    name: str
    figures: list[Figure]
    headlines: list[Headline] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    wall_s: float = 0.0

    def markdown(self) -> str:
        return "\n".join(figure.markdown() for figure in self.figures)

    def finish(self, started_monotonic: float) -> BenchResult:
        """Record the wall time since ``started_monotonic``, print the tables and save the JSON."""
        self.wall_s = time.monotonic() - started_monotonic
        print(self.markdown(), flush=True)
        self.save()
        return self

    def save(self) -> Path:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUT_DIR / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        return path


def _cell(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def machine() -> dict[str, Any]:
    """The date, and what the machine is: cores, memory, CPU model, load at the time."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.rstrip()
    return {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu_model": model, "free_h": free, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "python": platform.python_version(), "kernel": platform.release()}


def machine_markdown(info: dict[str, Any]) -> str:
    return (f"- date: {info['date']}\n- nproc: {info['nproc']}, CPU: {info['cpu_model']}\n"
            f"- load average at start: {' '.join(info['loadavg'])}\n- python {info['python']}, "
            f"kernel {info['kernel']}\n- `free -h`:\n\n```\n{info['free_h']}\n```\n")
