"""Memory of a group of services' process trees, sampled while a benchmark runs.

A prefork worker is a parent and its children, and each child may have ffmpeg children of its own; they all share
the parent's session (``Service`` starts every service in a new session), so the group is "every process whose
session id is a matching service's pid". RSS counts the pages forked children share once per process, so PSS
(``/proc/<pid>/smaps_rollup``, the shared pages split among their users) is reported beside it: PSS is what the
group really costs, RSS what a container's limit would see if each process were its own container.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.local.services import LocalStack

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


@dataclass(frozen=True)
class MemorySample:
    """One look at the group: summed RSS and PSS in MB, and how many processes it had."""

    rss_mb: float = 0.0
    pss_mb: float = 0.0
    processes: int = 0


def _session(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _rss_pss_mb(entry: Path) -> tuple[float, float]:
    rss = int((entry / "statm").read_text().split()[1]) * PAGE_BYTES / MB
    pss = rss
    try:
        for line in (entry / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
                break
    except OSError:
        pass  # no smaps_rollup (old kernel, or not ours): count RSS
    return rss, pss


def sample(sessions: set[int]) -> MemorySample:
    """RSS and PSS of every live process in ``sessions`` now."""
    rss = pss = 0.0
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _session(entry) not in sessions:
            continue
        try:
            r, p = _rss_pss_mb(entry)
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        rss, pss, count = rss + r, pss + p, count + 1
    return MemorySample(rss, pss, count)


def own() -> MemorySample:
    """This process alone, now."""
    rss, pss = _rss_pss_mb(Path("/proc/self"))
    return MemorySample(rss, pss, 1)


class PeakMemory:
    """Samples the live services of ``stack`` whose name passes ``matches`` every ``interval_s`` (services started
    after it are picked up too) and keeps the peak of each figure."""

    def __init__(self, stack: LocalStack, matches: Callable[[str], bool], interval_s: float = 0.5) -> None:
        self._stack, self._matches, self._interval = stack, matches, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = MemorySample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            sessions = {s.pid for s in self._stack.services if self._matches(s.name) and s.alive()}
            now = sample(sessions)
            self.peak = MemorySample(max(self.peak.rss_mb, now.rss_mb), max(self.peak.pss_mb, now.pss_mb),
                                     max(self.peak.processes, now.processes))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
