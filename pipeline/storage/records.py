"""Durable outcome records in S3, beside each output. S3 is the ledger; Redis is only a queue.

Key layout for a job whose output is ``s3://B/K``:

    s3://B/K                      the converted audio
    s3://B/K.provenance.json      success: how the output was made. Written LAST, with If-None-Match: *, so it is
                                  the job's commit marker: once it exists, every later delivery stops without spending.
    s3://B/K.failure.json         a final non-success: failed, rejected, deferred or cancelled. Removed when a
                                  later attempt succeeds.

Both records carry ``schema`` and ``schema_version``; ``from_dict`` checks them and raises ``UnreadableRecord`` for
anything this version cannot read. The typed records here are what every reader uses (reconcile, plan, the demo,
benchmarks, tests); nothing else spells their keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import ConditionFailed, PipelineError, RecordError
from pipeline.keys import FAILURE_SUFFIX, PROVENANCE_SUFFIX
from pipeline.s3uri import S3Uri
from pipeline.states import FAILURE_STATES, JobState
from pipeline.storage.s3 import Storage

__all__ = [
    "FAILURE_SCHEMA",
    "FAILURE_SUFFIX",
    "PROVENANCE_SCHEMA",
    "PROVENANCE_SUFFIX",
    "SCHEMA_VERSION",
    "Cost",
    "FailureRecord",
    "JobIdentity",
    "ProvenanceRecord",
    "commit",
    "failure_state",
    "failure_uri",
    "is_committed",
    "provenance_uri",
    "record_failure",
]

PROVENANCE_SCHEMA = "sts-pipeline/provenance"
FAILURE_SCHEMA = "sts-pipeline/failure"
SCHEMA_VERSION = 1


def provenance_uri(output: S3Uri) -> S3Uri:
    return output.child(PROVENANCE_SUFFIX)


def failure_uri(output: S3Uri) -> S3Uri:
    return output.child(FAILURE_SUFFIX)


def failure_state(error: PipelineError) -> JobState:
    """How a final error is reported: rejected (the API refused the request), deferred (not started), or failed."""
    return error.final_state


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 time from a record (naive times are UTC), or None when it is missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Cost:
    """What a job was billed (credits) and how many requests it made, over all its attempts."""

    credits: float = 0.0
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"credits": self.credits, "requests": self.requests}

    @classmethod
    def from_dict(cls, data: Any) -> Cost:
        data = _mapping(data)
        return cls(credits=_number(data.get("credits")) or 0.0, requests=int(_number(data.get("requests")) or 0))


@dataclass(frozen=True)
class JobIdentity:
    """Which job a record is about, and where it came from."""

    job_id: str
    run_id: str
    shard: str
    line: int
    manifest_id: str | None
    metadata: dict[str, Any] | None
    input_uri: str
    output_uri: str

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "run_id": self.run_id, "shard": self.shard, "line": self.line,
                "manifest_id": self.manifest_id, "metadata": self.metadata, "input": {"uri": self.input_uri},
                "output": {"uri": self.output_uri}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobIdentity:
        return cls(job_id=str(data.get("job_id", "")), run_id=str(data.get("run_id", "")),
                   shard=str(data.get("shard", "")), line=int(_number(data.get("line")) or 0),
                   manifest_id=data.get("manifest_id"), metadata=data.get("metadata"),
                   input_uri=str(_mapping(data.get("input")).get("uri", "")),
                   output_uri=str(_mapping(data.get("output")).get("uri", "")))


def _check_schema(data: Any, schema: str) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise RecordError(f"not a {schema} record")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RecordError(f"{schema} schema_version {version!r} is newer than this version reads ({SCHEMA_VERSION})")
    return data


@dataclass(frozen=True)
class ProvenanceRecord:
    """How an output was made: the commit marker of a succeeded job.

    ``input``, ``request``, ``output``, ``quality``, ``timings``, ``worker`` and ``segments`` keep the nested
    objects as written (their fields are listed in the README); the accessors below read what reports need.
    """

    identity: JobIdentity
    input: dict[str, Any]
    request: dict[str, Any]
    output: dict[str, Any]
    quality: dict[str, Any]
    timings: dict[str, Any]
    worker: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    cost: Cost = Cost()
    segments: list[dict[str, Any]] | None = None
    superseded_request_ids: list[str] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def finished_at(self) -> datetime | None:
        return parse_time(self.timings.get("finished_at"))

    @property
    def output_sha256(self) -> str | None:
        value = self.output.get("sha256")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        record = {**self.identity.to_dict(), "input": {"uri": self.identity.input_uri, **self.input},
                  "request": self.request, "attempts": self.attempts, "request_ids": self.request_ids,
                  "segments": self.segments, "output": {"uri": self.identity.output_uri, **self.output},
                  "quality": self.quality, "cost": self.cost.to_dict(), "timings": self.timings,
                  "worker": self.worker, "schema": PROVENANCE_SCHEMA, "schema_version": self.schema_version,
                  "status": JobState.SUCCEEDED.value}
        if self.superseded_request_ids is not None:
            record["superseded_request_ids"] = self.superseded_request_ids
        return record

    @classmethod
    def from_dict(cls, data: Any) -> ProvenanceRecord:
        """Read a stored record; ``RecordError`` if it is not one this version reads."""
        data = _check_schema(data, PROVENANCE_SCHEMA)
        strip = {"uri"}
        return cls(identity=JobIdentity.from_dict(data),
                   input={k: v for k, v in _mapping(data.get("input")).items() if k not in strip},
                   request=_mapping(data.get("request")),
                   output={k: v for k, v in _mapping(data.get("output")).items() if k not in strip},
                   quality=_mapping(data.get("quality")), timings=_mapping(data.get("timings")),
                   worker=_mapping(data.get("worker")), attempts=_dicts(data.get("attempts")),
                   request_ids=[str(r) for r in data.get("request_ids") or [] if r],
                   cost=Cost.from_dict(data.get("cost")), segments=data.get("segments"),
                   superseded_request_ids=data.get("superseded_request_ids"),
                   schema_version=int(data["schema_version"]))


@dataclass(frozen=True)
class FailureRecord:
    """A final non-success: the job's identity, its state (failed, rejected, deferred, cancelled), the error and the
    attempts.

    ``error`` is the error's record (``PipelineError.to_record``): error_class, reason, message, status, request_id,
    and for rejections the API's ``detail``.
    """

    identity: JobIdentity
    state: JobState
    error: dict[str, Any]
    at: str
    worker: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    cost: Cost = Cost()
    schema_version: int = SCHEMA_VERSION

    @property
    def reason(self) -> str:
        return str(self.error.get("reason") or self.state.value)

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")

    @property
    def finished_at(self) -> datetime | None:
        return parse_time(self.at)

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity.to_dict(), "attempts": self.attempts, "request_ids": self.request_ids,
                "cost": self.cost.to_dict(), "at": self.at, "worker": self.worker, "schema": FAILURE_SCHEMA,
                "schema_version": self.schema_version, "status": self.state.value, "error": self.error}

    @classmethod
    def from_dict(cls, data: Any) -> FailureRecord:
        """Read a stored record; ``RecordError`` if it is not one this version reads."""
        data = _check_schema(data, FAILURE_SCHEMA)
        try:
            state = JobState(data.get("status"))
        except ValueError:
            state = None
        if state not in FAILURE_STATES:
            raise RecordError(f"failure record status {data.get('status')!r} is not one of failed, rejected, deferred, "
                              "cancelled")
        return cls(identity=JobIdentity.from_dict(data), state=state, error=_mapping(data.get("error")),
                   at=str(data.get("at") or ""), worker=_mapping(data.get("worker")),
                   attempts=_dicts(data.get("attempts")),
                   request_ids=[str(r) for r in data.get("request_ids") or [] if r],
                   cost=Cost.from_dict(data.get("cost")), schema_version=int(data["schema_version"]))


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def commit(storage: Storage, output: S3Uri, record: ProvenanceRecord) -> bool:
    """Write the provenance record as the commit marker. True if the record now there is ours.

    When another attempt committed first and its output bytes were since replaced by ours (both uploaded to the same
    key), the record is swapped for ours with If-Match, so provenance always describes the bytes that are there.
    """
    body = record.to_dict()
    target = provenance_uri(output)
    try:
        storage.put_json(target, body, if_none_match=True)
    except ConditionFailed:
        existing = storage.get_json(target)
        current = storage.head(output)
        if existing is None or current is None:
            return False
        winner, etag = existing
        ours = record.output_sha256
        winner_sha = _mapping(_mapping(winner).get("output")).get("sha256")
        if current.sha256 == ours and winner_sha != ours:
            try:
                storage.put_json(target, {**body, "superseded_request_ids": _mapping(winner).get("request_ids", [])},
                                 if_match=etag)
            except ConditionFailed:
                return False
            return True
        return False
    storage.delete(failure_uri(output))
    return True


def record_failure(storage: Storage, output: S3Uri, record: FailureRecord) -> None:
    """Write the failure record, unless the job has committed meanwhile (success always wins)."""
    if storage.head(provenance_uri(output)) is not None:
        return
    storage.put_json(failure_uri(output), record.to_dict())


def is_committed(storage: Storage, output: S3Uri) -> bool:
    return storage.head(provenance_uri(output)) is not None
