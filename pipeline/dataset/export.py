"""``export``: a run's succeeded jobs into a dataset people load directly, streamed, from S3 alone.

The export's state (``export.json``: format, runs, files, counts, voices, the commands that made it) is written
last, beside a dataset card. An append (``--append``, or ``--since RUN``) reads that state, leaves out every job of
the runs already exported (and of RUN), writes new shards numbered after the old ones, and never rewrites a shard
that is there; a night that re-runs earlier clips adds only its new combinations.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.dataset.card import render_card
from pipeline.dataset.export_hf import HfWriter
from pipeline.dataset.export_nemo import NemoWriter
from pipeline.dataset.export_webdataset import WebDatasetWriter
from pipeline.dataset.rows import ExportRow, RowStats, succeeded_rows
from pipeline.dataset.sink import Sink
from pipeline.errors import ConfigError
from pipeline.run.stored import load_run, shards_of_run
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

__all__ = ["FORMATS", "STATE", "ExportSummary", "export_run"]

STATE = "export.json"
FORMATS = ("hf", "webdataset", "nemo")


class _Writer(Protocol):
    def add(self, row: ExportRow) -> None: ...

    def close(self) -> list[str]: ...


@dataclass
class ExportSummary:
    """What one export call added, and the export's state after it."""

    rows: int = 0
    files: list[str] = field(default_factory=list)
    stats: RowStats = field(default_factory=RowStats)
    state: dict[str, Any] = field(default_factory=dict)


def _writer(fmt: str, sink: Sink, first_shard: int, max_shard_bytes: int | None) -> _Writer:
    if fmt == "hf":
        return HfWriter(sink, first_shard=first_shard, **({"max_shard_bytes": max_shard_bytes}
                                                          if max_shard_bytes else {}))
    if fmt == "webdataset":
        return WebDatasetWriter(sink, first_shard=first_shard, **({"max_shard_bytes": max_shard_bytes}
                                                                  if max_shard_bytes else {}))
    if fmt == "nemo":
        return NemoWriter(sink, first_shard=first_shard)
    raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(FORMATS)}")


def _previous(sink: Sink, fmt: str, append: bool) -> dict[str, Any]:
    """The export's state to append to (empty for a new export); refuses a mix of formats or an accidental
    overwrite."""
    text = sink.read_text(STATE)
    if text is None:
        return {}
    state = json.loads(text)
    if not append:
        raise ConfigError(f"{sink} already holds an export (runs {', '.join(state.get('runs') or [])}); pass "
                          "--append (or --since RUN) to add a later run to it, or export somewhere else")
    if state.get("format") != fmt:
        raise ConfigError(f"{sink} holds a {state.get('format')!r} export; append with --format {state.get('format')}")
    return dict(state)


def _job_ids(storage: Storage, root: S3Uri, runs: list[str]) -> set[str]:
    ids: set[str] = set()
    for run_id in runs:
        for shard in shards_of_run(load_run(storage, root, run_id)):
            ids.update(entry.job_id for entry in shard.entries)
    return ids


def export_run(storage: Storage, root: S3Uri, run_id: str, fmt: str, sink: Sink, *, append: bool = False,
               since: str | None = None, command: str = "", max_shard_bytes: int | None = None) -> ExportSummary:
    """Export the succeeded jobs of ``run_id`` (runs under ``root``) into ``sink`` as ``fmt``."""
    state = _previous(sink, fmt, append or since is not None)
    earlier = list(dict.fromkeys([*(state.get("runs") or []), *([since] if since else [])]))
    if run_id in earlier:
        raise ConfigError(f"run {run_id} is already in this export; nothing to add")
    shards = shards_of_run(load_run(storage, root, run_id))
    summary = ExportSummary()
    writer = _writer(fmt, sink, int(state.get("next_shard", 0)), max_shard_bytes)
    voices: Counter[str] = Counter(state.get("voices") or {})
    seconds = [float(state.get("source_seconds", 0.0)), float(state.get("converted_seconds", 0.0))]
    for row in succeeded_rows(storage, shards, summary.stats, skip_ids=_job_ids(storage, root, earlier)):
        writer.add(row)
        summary.rows += 1
        voices[row.voice_id] += 1
        seconds[0] += row.meta.get("input_duration_s") or 0.0
        seconds[1] += row.meta.get("output_duration_s") or 0.0
    summary.files = writer.close()
    files = [*(state.get("files") or []), *(name for name in summary.files if name not in (state.get("files") or []))]
    summary.state = {"format": fmt, "runs": [*(state.get("runs") or []), run_id], "files": files,
                     "next_shard": int(state.get("next_shard", 0)) + len(summary.files),
                     "rows": int(state.get("rows", 0)) + summary.rows, "source_seconds": round(seconds[0], 3),
                     "converted_seconds": round(seconds[1], 3), "voices": dict(sorted(voices.items())),
                     "commands": [*(state.get("commands") or []), *([command] if command else [])]}
    sink.write_text("README.md", render_card(summary.state))
    sink.write_text(STATE, json.dumps(summary.state, indent=2, ensure_ascii=False) + "\n")
    return summary
