"""Durable outcome records in S3, beside each output. S3 is the ledger; Redis is only a queue.

Key layout for a job whose output is ``s3://B/K``:

    s3://B/K                      the converted audio
    s3://B/K.provenance.json      success: how the output was made. Written LAST, with If-None-Match: *, so it is
                                  the job's commit marker: once it exists, every later delivery stops without spending.
    s3://B/K.failure.json         a final non-success: failed, rejected (422) or deferred (budget). Removed when a
                                  later attempt succeeds.

Both records carry ``schema`` and ``schema_version``; readers check them.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.errors import PipelineError
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import ConditionFailed, Storage

PROVENANCE_SCHEMA = "sts-pipeline/provenance"
FAILURE_SCHEMA = "sts-pipeline/failure"
SCHEMA_VERSION = 1
PROVENANCE_SUFFIX = ".provenance.json"
FAILURE_SUFFIX = ".failure.json"

FailureStatus = Literal["failed", "rejected", "deferred"]


def provenance_uri(output: S3Uri) -> S3Uri:
    return output.child(PROVENANCE_SUFFIX)


def failure_uri(output: S3Uri) -> S3Uri:
    return output.child(FAILURE_SUFFIX)


def failure_status(error: PipelineError) -> FailureStatus:
    """How a final error is reported: rejected (422), deferred (not started), or failed."""
    from pipeline.errors import Deferred, RejectedError

    if isinstance(error, RejectedError):
        return "rejected"
    if isinstance(error, Deferred):
        return "deferred"
    return "failed"


def build_failure(*, error: PipelineError, base: dict[str, Any]) -> dict[str, Any]:
    """A failure record: the job's identity (``base``), the error, and whatever attempts were made."""
    return {
        **base,
        "schema": FAILURE_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "status": failure_status(error),
        "error": error.to_record(),
    }


def commit(storage: Storage, output: S3Uri, record: dict[str, Any]) -> bool:
    """Write the provenance record as the commit marker. True if the record now there is ours.

    When another attempt committed first and its output bytes were since replaced by ours (both uploaded to the same
    key), the record is swapped for ours with If-Match, so provenance always describes the bytes that are there.
    """
    record = {**record, "schema": PROVENANCE_SCHEMA, "schema_version": SCHEMA_VERSION, "status": "succeeded"}
    target = provenance_uri(output)
    try:
        storage.put_json(target, record, if_none_match=True)
    except ConditionFailed:
        existing = storage.get_json(target)
        current = storage.head(output)
        if existing is None or current is None:
            return False
        winner, etag = existing
        ours = record["output"]["sha256"]
        if current.sha256 == ours and winner.get("output", {}).get("sha256") != ours:
            try:
                storage.put_json(target, {**record, "superseded_request_ids": winner.get("request_ids", [])},
                                 if_match=etag)
            except ConditionFailed:
                return False
            return True
        return False
    storage.delete(failure_uri(output))
    return True


def record_failure(storage: Storage, output: S3Uri, record: dict[str, Any]) -> None:
    """Write the failure record, unless the job has committed meanwhile (success always wins)."""
    if storage.head(provenance_uri(output)) is not None:
        return
    storage.put_json(failure_uri(output), record)


def is_committed(storage: Storage, output: S3Uri) -> bool:
    return storage.head(provenance_uri(output)) is not None
