"""The reconciler: what S3 alone says about every line of a run's manifests. Redis is never asked.

A job's state comes from the objects beside its output (see ``pipeline.storage.records``):

    provenance record               succeeded (it wins over a failure record an earlier attempt left behind)
    failure record, "failed"        failed    (grouped by ``error.reason``)
    failure record, "rejected"      rejected  (the API answered 422; its ``detail`` is summarised)
    failure record, "deferred"      deferred  (never started: budget reached)
    the output alone                orphan    (uploaded but never committed: the worker died in between)
    failure record, "cancelled"     cancelled (the run was cancelled before the job spent)
    nothing                         missing   (never ran, or has not run yet); cancelled when the run was cancelled
                                    (its control.json says so: the caller passes ``cancelled=True``)

An output without a provenance record is also listed among the ``orphans`` when a failure record decided its state.
``retry`` re-runs failed, deferred, orphaned and missing jobs (rejected and cancelled ones only when asked).

Lines that are not valid jobs never ran; they count per shard as ``invalid``. Costs are the ``cost.credits`` of both
kinds of record. Each output directory is listed once (``scan_outputs``); only the failure records, and the
provenance records when ``fetch_records`` is set, are read, by a pool of threads.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import RecordError, redact, summarize_rejection
from pipeline.manifest.load import (
    ManifestEntry,
    ManifestProblem,
    Shard,
)
from pipeline.s3uri import S3Uri
from pipeline.states import LEDGER_STATES, JobState
from pipeline.storage.records import FailureRecord, ProvenanceRecord, failure_uri, provenance_uri
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import OutputPresence, scan_outputs

#: concurrent GETs of records; S3 serves far more, the bound keeps one reconcile from hogging the connection pool
FETCH_WORKERS = 16


#: what ``retry`` re-runs by default; rejected jobs only on request (the same request would be refused again)
RETRY_STATES = frozenset({JobState.FAILED, JobState.DEFERRED, JobState.ORPHAN, JobState.MISSING})


@dataclass(frozen=True)
class JobResult:
    """One valid manifest line and its state in S3."""

    entry: ManifestEntry
    where: str  # FILE:LINE, as a user finds the line
    state: JobState
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
    #: every request id of the job's attempts, the input and output durations and the job's wall time (results.jsonl)
    request_ids: tuple[str, ...] = ()
    durations: dict[str, float] = field(default_factory=dict)
    #: a rejection's API ``detail`` as the service sent it (errors.jsonl)
    detail: Any = None

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
    counts: dict[JobState, int]
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
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def problems(self) -> list[ManifestProblem]:
        return [problem for shard in self.shards for problem in shard.problems]

    @property
    def all_succeeded(self) -> bool:
        """True only when every line of every manifest is a job that succeeded."""
        return not self.problems and all(r.state is JobState.SUCCEEDED for r in self.results)

    def shard_summaries(self) -> list[ShardSummary]:
        by_shard: dict[str, list[JobResult]] = defaultdict(list)
        for result in self.results:
            by_shard[result.entry.shard].append(result)
        return [_summary(shard.name, shard.label, shard.line_count, _invalid(shard), by_shard[shard.name])
                for shard in self.shards]

    def totals(self) -> ShardSummary:
        return _summary("total", "total", sum(s.line_count for s in self.shards),
                        sum(_invalid(s) for s in self.shards), self.results)

    def in_state(self, state: JobState) -> list[JobResult]:
        return [r for r in self.results if r.state is state]

    def groups(self, state: JobState) -> list[Group]:
        """Jobs in ``state`` grouped by reason (by message for rejected jobs), largest group first."""
        grouped: dict[str, list[JobResult]] = defaultdict(list)
        for result in self.in_state(state):
            key = result.message if state is JobState.REJECTED else result.reason
            grouped[key or "unknown"].append(result)
        return sorted((Group(k, v) for k, v in grouped.items()), key=lambda g: (-g.count, g.key))

    @property
    def orphans(self) -> list[JobResult]:
        """Jobs whose output exists without a provenance record, whatever their state."""
        return [r for r in self.results if r.output_exists and r.state is not JobState.SUCCEEDED]

    def flag_counts(self) -> Counter[str]:
        """How many outputs carry each quality flag."""
        return Counter(flag for r in self.in_state(JobState.SUCCEEDED) for flag in set(r.flags))

    def measured(self, metric: str) -> list[float]:
        """The values of one quality metric (``drift_ms``, ``lufs``) over the outputs that have it."""
        values = (getattr(r, metric) for r in self.in_state(JobState.SUCCEEDED))
        return [v for v in values if v is not None]

    def throughput(self) -> list[tuple[datetime, Counter[JobState]]]:
        """Jobs finished per minute (UTC), by state; minutes with none are left out."""
        minutes: dict[datetime, Counter[JobState]] = defaultdict(Counter)
        for result in self.results:
            if result.finished_at is not None:
                minutes[result.finished_at.replace(second=0, microsecond=0)][result.state] += 1
        return sorted(minutes.items())

    def to_retry(self, *, include_rejected: bool = False, shards: Iterable[str] = (),
                 include_cancelled: bool = False) -> list[JobResult]:
        """The jobs a retry re-runs: failed, deferred, orphaned and missing (and rejected or cancelled, if asked), in
        order."""
        wanted = (RETRY_STATES | ({JobState.REJECTED} if include_rejected else set())
                  | ({JobState.CANCELLED} if include_cancelled else set()))
        only = set(shards)
        return [r for r in self.results if r.state in wanted and (not only or r.entry.shard in only)]


def _invalid(shard: Shard) -> int:
    return max(shard.line_count - len(shard.entries), 0)


def _summary(name: str, label: str, lines: int, invalid: int, results: Sequence[JobResult]) -> ShardSummary:
    counts = Counter(r.state for r in results)
    return ShardSummary(name=name, label=label, lines=lines, counts={s: counts.get(s, 0) for s in LEDGER_STATES},
                        invalid=invalid, credits=round(sum(r.credits for r in results), 6),
                        requests=sum(r.requests for r in results))


# --- classification (pure)

def classify(entry: ManifestEntry, *, where: str, output_exists: bool, committed: bool,
             provenance: dict[str, Any] | None = None, failure: dict[str, Any] | None = None) -> JobResult:
    """A job's state from what exists beside its output and the records read.

    ``committed`` says the provenance record exists (``provenance`` is its stored content, when it was read);
    ``failure`` is the failure record's stored content, or None when there is none.
    """
    base: dict[str, Any] = {"entry": entry, "where": where, "output_exists": output_exists}
    if committed:
        try:
            record = ProvenanceRecord.from_dict(provenance)
        except RecordError:  # committed all the same: its state is sure, its figures are not readable
            return JobResult(state=JobState.SUCCEEDED, **base)
        return JobResult(state=JobState.SUCCEEDED, **base, credits=record.cost.credits,
                         requests=record.cost.requests, finished_at=record.finished_at, quality=record.quality,
                         request_ids=tuple(record.request_ids), durations=_durations(record))
    if failure is not None:
        return _from_failure(failure, base, entry)
    return JobResult(state=JobState.ORPHAN if output_exists else JobState.MISSING, **base)


def _from_failure(stored: dict[str, Any], base: dict[str, Any], entry: ManifestEntry) -> JobResult:
    try:
        record = FailureRecord.from_dict(stored)
    except RecordError:
        return JobResult(state=JobState.FAILED, **base, reason="unreadable_record",
                         message=f"{failure_uri(S3Uri.parse(entry.output))} is not a failure record this version "
                                 "reads; inspect it, then delete it to have the job retried as missing")
    message = record.message
    if record.state is JobState.REJECTED:
        message = summarize_rejection(record.error.get("detail"), message)
    status = record.error.get("status")
    return JobResult(state=record.state, **base, reason=record.reason, message=redact(message),
                     error_class=_text_or_none(record.error.get("error_class")),
                     http_status=status if isinstance(status, int) else None,
                     request_id=_text_or_none(record.error.get("request_id")), credits=record.cost.credits,
                     requests=record.cost.requests, finished_at=record.finished_at,
                     request_ids=tuple(record.request_ids), detail=record.error.get("detail"))


def _durations(record: ProvenanceRecord) -> dict[str, float]:
    """Input and output seconds and the job's wall time, as far as the record holds them."""
    found = {"input_s": _number(record.input.get("duration_s")), "output_s": _number(record.output.get("duration_s")),
             "total_s": _number(record.timings.get("total_s")),
             "queue_wait_s": _number(record.timings.get("queue_wait_s"))}
    return {k: v for k, v in found.items() if v is not None}


def _text_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- reading S3

def reconcile(storage: Storage, shards: Sequence[Shard], *, fetch_records: bool = True,
              run_id: str | None = None, workers: int = FETCH_WORKERS, cancelled: bool = False) -> RunReport:
    """The state of every valid line of ``shards``, from S3 alone.

    Without ``fetch_records`` the provenance records are not read: states stay exact, but successes carry no cost,
    quality or finish time (enough for ``retry``). With ``cancelled`` (the run's control.json says it was
    cancelled) a line with no trace at all is ``cancelled``, not ``missing``: it was never going to run.
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
    if cancelled:
        results = [replace(r, state=JobState.CANCELLED, reason="cancelled", message="the run was cancelled before "
                           "this job started") if r.state is JobState.MISSING else r for r in results]
    return RunReport(shards=list(shards), results=results, run_id=run_id)


def _vanished(seen: OutputPresence, records: dict[str, dict[str, Any] | None], output: S3Uri) -> bool:
    return seen.failure and not seen.provenance and records.get(str(failure_uri(output))) is None


def _result(shard: Shard, entry: ManifestEntry, seen: OutputPresence,
            records: dict[str, dict[str, Any] | None]) -> JobResult:
    output = S3Uri.parse(entry.output)
    provenance = records.get(str(provenance_uri(output)))
    failure = None if seen.provenance else records.get(str(failure_uri(output)))
    where = f"{shard.label}:{entry.line}" + (f" ({entry.variant})" if entry.variant else "")  # which combination
    return classify(entry, where=where, output_exists=seen.output,
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
        return {str(uri): record for uri, record in zip(uris, pool.map(read, uris), strict=False)}
