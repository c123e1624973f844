"""The reconciler: what S3 alone says about every line of a run's manifests. Redis is never asked.

A job's state comes from the objects beside its output (see ``pipeline.storage.records``):

    provenance record               succeeded (it wins over a failure record an earlier attempt left behind)
    failure record, "failed"        failed    (grouped by ``error.reason``)
    failure record, "rejected"      rejected  (the API answered 422; its ``detail`` is summarised)
    failure record, "deferred"      deferred  (never started: budget reached)
    the output alone                orphan    (uploaded but never committed: the worker died in between)
    nothing                         missing   (never ran, or has not run yet)

An output without a provenance record is also listed among the ``orphans`` when a failure record decided its state.
``retry`` re-runs failed, deferred, orphaned and missing jobs (rejected ones only when asked).

Lines that are not valid jobs never ran; they count per shard as ``invalid``. Costs are the ``cost.credits`` of both
kinds of record. Each output directory is listed once (``scan_outputs``); only the failure records, and the
provenance records when ``fetch_records`` is set, are read, by a pool of threads.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from pipeline.errors import redact
from pipeline.storage.scan import OutputPresence, scan_outputs
from pipeline.manifest.load import (
    ManifestEntry,
    ManifestLimits,
    ManifestProblem,
    Shard,
    parse_manifest,
    write_manifest,
)
from pipeline.storage.records import FAILURE_SCHEMA, failure_uri, provenance_uri
from pipeline.run.stored import StoredRun
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

#: concurrent GETs of records; S3 serves far more, the bound keeps one reconcile from hogging the connection pool
FETCH_WORKERS = 16


class Outcome(str, Enum):
    """What S3 says about one job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    DEFERRED = "deferred"
    ORPHAN = "orphan"
    MISSING = "missing"


#: what ``retry`` re-runs by default; rejected jobs only on request (the same request would be refused again)
RETRY_OUTCOMES = frozenset({Outcome.FAILED, Outcome.DEFERRED, Outcome.ORPHAN, Outcome.MISSING})


@dataclass(frozen=True)
class JobResult:
    """One valid manifest line and its state in S3."""

    entry: ManifestEntry
    where: str  # FILE:LINE, as a user finds the line
    state: Outcome
    output_exists: bool = False
    reason: str | None = None
    message: str | None = None
    error_class: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    credits: float = 0.0
    requests: int = 0
    finished_at: datetime | None = None
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def drift_ms(self) -> float | None:
        return _number(self.quality.get("drift_ms"))

    @property
    def lufs(self) -> float | None:
        return _number(self.quality.get("lufs"))

    @property
    def flags(self) -> list[str]:
        flags = self.quality.get("flags") or []
        return [str(flag) for flag in flags] if isinstance(flags, list) else []


@dataclass(frozen=True)
class Group:
    """Jobs that share a key (a failure reason, a rejection message)."""

    key: str
    results: list[JobResult]

    @property
    def count(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class ShardSummary:
    """Counts and cost of one shard (or of the whole run)."""

    name: str
    label: str
    lines: int
    counts: dict[Outcome, int]
    invalid: int
    credits: float
    requests: int

    @property
    def jobs(self) -> int:
        return sum(self.counts.values())


@dataclass
class RunReport:
    """Every job's state, and the aggregates the report formats show."""

    shards: list[Shard]
    results: list[JobResult]
    run_id: str | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def problems(self) -> list[ManifestProblem]:
        return [problem for shard in self.shards for problem in shard.problems]

    @property
    def all_succeeded(self) -> bool:
        """True only when every line of every manifest is a job that succeeded."""
        return not self.problems and all(r.state is Outcome.SUCCEEDED for r in self.results)

    def shard_summaries(self) -> list[ShardSummary]:
        by_shard: dict[str, list[JobResult]] = defaultdict(list)
        for result in self.results:
            by_shard[result.entry.shard].append(result)
        return [_summary(shard.name, shard.label, shard.line_count, _invalid(shard), by_shard[shard.name])
                for shard in self.shards]

    def totals(self) -> ShardSummary:
        return _summary("total", "total", sum(s.line_count for s in self.shards),
                        sum(_invalid(s) for s in self.shards), self.results)

    def in_state(self, state: Outcome) -> list[JobResult]:
        return [r for r in self.results if r.state is state]

    def groups(self, state: Outcome) -> list[Group]:
        """Jobs in ``state`` grouped by reason (by message for rejected jobs), largest group first."""
        grouped: dict[str, list[JobResult]] = defaultdict(list)
        for result in self.in_state(state):
            key = result.message if state is Outcome.REJECTED else result.reason
            grouped[key or "unknown"].append(result)
        return sorted((Group(k, v) for k, v in grouped.items()), key=lambda g: (-g.count, g.key))

    @property
    def orphans(self) -> list[JobResult]:
        """Jobs whose output exists without a provenance record, whatever their state."""
        return [r for r in self.results if r.output_exists and r.state is not Outcome.SUCCEEDED]

    def flag_counts(self) -> Counter[str]:
        """How many outputs carry each quality flag."""
        return Counter(flag for r in self.in_state(Outcome.SUCCEEDED) for flag in set(r.flags))

    def measured(self, metric: str) -> list[float]:
        """The values of one quality metric (``drift_ms``, ``lufs``) over the outputs that have it."""
        values = (getattr(r, metric) for r in self.in_state(Outcome.SUCCEEDED))
        return [v for v in values if v is not None]

    def throughput(self) -> list[tuple[datetime, Counter[Outcome]]]:
        """Jobs finished per minute (UTC), by state; minutes with none are left out."""
        minutes: dict[datetime, Counter[Outcome]] = defaultdict(Counter)
        for result in self.results:
            if result.finished_at is not None:
                minutes[result.finished_at.replace(second=0, microsecond=0)][result.state] += 1
        return sorted(minutes.items())

    def to_retry(self, *, include_rejected: bool = False, shards: Iterable[str] = ()) -> list[JobResult]:
        """The jobs a retry re-runs: failed, deferred, orphaned and missing (and rejected, if asked), in order."""
        wanted = RETRY_OUTCOMES | ({Outcome.REJECTED} if include_rejected else set())
        only = set(shards)
        return [r for r in self.results if r.state in wanted and (not only or r.entry.shard in only)]


def _invalid(shard: Shard) -> int:
    return max(shard.line_count - len(shard.entries), 0)


def _summary(name: str, label: str, lines: int, invalid: int, results: Sequence[JobResult]) -> ShardSummary:
    counts = Counter(r.state for r in results)
    return ShardSummary(name=name, label=label, lines=lines, counts={s: counts.get(s, 0) for s in Outcome},
                        invalid=invalid, credits=round(sum(r.credits for r in results), 6),
                        requests=sum(r.requests for r in results))


# --- classification (pure)

def classify(entry: ManifestEntry, *, where: str, output_exists: bool, committed: bool,
             provenance: dict[str, Any] | None = None, failure: dict[str, Any] | None = None) -> JobResult:
    """A job's state from what exists beside its output and the records read.

    ``committed`` says the provenance record exists (``provenance`` is its content, when it was read); ``failure`` is
    the failure record's content, or None when there is none.
    """
    base = {"entry": entry, "where": where, "output_exists": output_exists}
    if committed:
        record = provenance or {}
        return JobResult(state=Outcome.SUCCEEDED, **base, **_cost(record), finished_at=_finished(record),
                         quality=record.get("quality") if isinstance(record.get("quality"), dict) else {})
    if failure is not None:
        return _from_failure(failure, base, entry)
    return JobResult(state=Outcome.ORPHAN if output_exists else Outcome.MISSING, **base)


def _from_failure(record: dict[str, Any], base: dict[str, Any], entry: ManifestEntry) -> JobResult:
    status = record.get("status")
    if record.get("schema") != FAILURE_SCHEMA or status not in ("failed", "rejected", "deferred"):
        return JobResult(state=Outcome.FAILED, **base, reason="unreadable_record",
                         message=f"{failure_uri(S3Uri.parse(entry.output))} is not a failure record this version "
                                 "reads; inspect it, then delete it to have the job retried as missing")
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    message = str(error.get("message") or "")
    if status == "rejected":
        message = summarize_rejection(error.get("detail"), message)
    return JobResult(state=Outcome(status), **base, reason=str(error.get("reason") or status),
                     message=redact(message), error_class=error.get("error_class"),
                     http_status=error.get("status"), request_id=error.get("request_id"), **_cost(record),
                     finished_at=_parse_time(record.get("at")))


def summarize_rejection(detail: Any, fallback: str = "") -> str:
    """The API's 422 body in one line: ``field.path: message; ...`` for a validation list, else its message."""
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = [str(part) for part in item.get("loc") or []]
            if loc[:1] == ["body"]:
                loc = loc[1:]  # every field of a request is in its body; the rest of the path names it
            text = str(item.get("msg") or item.get("message") or json.dumps(item, sort_keys=True))
            parts.append(f"{'.'.join(loc)}: {text}" if loc else text)
        return "; ".join(parts)
    if isinstance(detail, dict) and (detail.get("message") or detail.get("msg")):
        return str(detail.get("message") or detail.get("msg"))
    if isinstance(detail, str) and detail:
        return detail
    return fallback or "rejected by the API (422) without a detail"


def _cost(record: dict[str, Any]) -> dict[str, Any]:
    cost = record.get("cost") if isinstance(record.get("cost"), dict) else {}
    return {"credits": _number(cost.get("credits")) or 0.0, "requests": int(_number(cost.get("requests")) or 0)}


def _finished(record: dict[str, Any]) -> datetime | None:
    timings = record.get("timings") if isinstance(record.get("timings"), dict) else {}
    return _parse_time(timings.get("finished_at"))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- reading S3

def reconcile(storage: Storage, shards: Sequence[Shard], *, fetch_records: bool = True,
              run_id: str | None = None, workers: int = FETCH_WORKERS) -> RunReport:
    """The state of every valid line of ``shards``, from S3 alone.

    Without ``fetch_records`` the provenance records are not read: states stay exact, but successes carry no cost,
    quality or finish time (enough for ``retry``).
    """
    located = [(shard, entry) for shard in shards for entry in shard.entries]
    presence = scan_outputs(storage, (entry.output for _, entry in located))
    wanted: list[S3Uri] = []
    for _, entry in located:
        seen, output = presence[entry.output], S3Uri.parse(entry.output)
        if seen.provenance and fetch_records:
            wanted.append(provenance_uri(output))
        elif seen.failure and not seen.provenance:
            wanted.append(failure_uri(output))
    records = _fetch(storage, wanted, workers)
    # a failure record listed but gone when read was removed by a success in between: look for that success
    vanished = [provenance_uri(S3Uri.parse(e.output)) for _, e in located
                if _vanished(presence[e.output], records, S3Uri.parse(e.output))]
    records.update(_fetch(storage, vanished, workers))
    results = [_result(shard, entry, presence[entry.output], records) for shard, entry in located]
    return RunReport(shards=list(shards), results=results, run_id=run_id)


def _vanished(seen: OutputPresence, records: dict[str, dict[str, Any] | None], output: S3Uri) -> bool:
    return seen.failure and not seen.provenance and records.get(str(failure_uri(output))) is None


def _result(shard: Shard, entry: ManifestEntry, seen: OutputPresence,
            records: dict[str, dict[str, Any] | None]) -> JobResult:
    output = S3Uri.parse(entry.output)
    provenance = records.get(str(provenance_uri(output)))
    failure = None if seen.provenance else records.get(str(failure_uri(output)))
    return classify(entry, where=f"{shard.label}:{entry.line}", output_exists=seen.output,
                    committed=seen.provenance or provenance is not None, provenance=provenance, failure=failure)


def _fetch(storage: Storage, uris: Sequence[S3Uri], workers: int) -> dict[str, dict[str, Any] | None]:
    """Read JSON records concurrently: URI -> content (``{}`` if it is not a JSON object, None if it is gone)."""
    def read(uri: S3Uri) -> dict[str, Any] | None:
        try:
            found = storage.get_json(uri)
        except ValueError:  # not JSON at all: classified as an unreadable record
            return {}
        if found is None:
            return None
        return found[0] if isinstance(found[0], dict) else {}

    if not uris:
        return {}
    # more threads than the client's connection pool only churn connections (urllib3 discards the surplus)
    pool_size = getattr(storage.client.meta.config, "max_pool_connections", workers)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, pool_size, len(uris)))) as pool:
        return {str(uri): record for uri, record in zip(uris, pool.map(read, uris))}


def shards_of_run(stored: StoredRun, *, output_prefix: str | None = None,
                  limits: ManifestLimits | None = None) -> list[Shard]:
    """Parse a stored run's manifests as they were submitted (its own output prefix unless one is given)."""
    prefix = output_prefix if output_prefix is not None else stored.info.get("output_prefix")
    return [parse_manifest(data, name, output_prefix=prefix, limits=limits)
            for name, data in sorted(stored.manifests.items())]


# --- retry manifests

def retry_lines(results: Iterable[JobResult]) -> dict[str, list[dict[str, Any]]]:
    """Each shard's lines to re-run, as the user wrote them (so every file is a valid manifest), in line order."""
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in sorted(results, key=lambda r: (r.entry.shard, r.entry.line)):
        lines[result.entry.shard].append(result.entry.raw)
    return dict(lines)


def write_retry_manifests(target: str | Path, results: Iterable[JobResult]) -> list[Path]:
    """Write the lines to re-run; return the files written (none when there is nothing to re-run).

    ``target`` a directory (it exists, or ends with ``/``): one file per shard, named like the shard. Otherwise one
    file holding every shard's lines, in the format its suffix names.
    """
    lines = retry_lines(results)
    if not lines:
        return []
    path = Path(target)
    if path.is_dir() or str(target).endswith(("/", os.sep)):
        path.mkdir(parents=True, exist_ok=True)
        for name, shard_lines in lines.items():
            write_manifest(path / name, shard_lines)
        return [path / name for name in lines]
    write_manifest(path, [line for shard_lines in lines.values() for line in shard_lines])
    return [path]


def retry_manifest_bytes(results: Iterable[JobResult]) -> dict[str, bytes]:
    """The retry manifests' bytes, one per shard named like it (what a retry run stores and enqueues)."""
    lines = retry_lines(results)
    with tempfile.TemporaryDirectory(prefix="sts-retry-") as tmp:
        out: dict[str, bytes] = {}
        for name, shard_lines in lines.items():
            target = Path(tmp) / name
            write_manifest(target, shard_lines)
            out[name] = target.read_bytes()
    return out
