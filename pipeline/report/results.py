"""Batch-style result files: what scripts read instead of scraping the report, kept with the run in S3.

    <run prefix>/results.jsonl   one line per manifest line (an invalid one says ``invalid``), ordered by shard
                                 and line: the manifest's ``id``, shard, line, job id, state, output URI,
                                 durations, credits, requests, request ids
    <run prefix>/errors.jsonl    the lines that did not succeed (failed, rejected, deferred, orphan, missing,
                                 cancelled, invalid), same order: state, reason, message, HTTP status, request
                                 id, the API's ``detail`` for a rejection

The run prefix is ``<runs root>/<run_id>`` (``pipeline.run.stored``). Both files are built from a ``RunReport`` (S3
alone, like every report), so they can be rebuilt any time with ``reconcile --run RUN --results``; the worker that
finishes a run's last job writes them once. Every text field is a record's own, already redacted; the API's detail
is redacted again, as text, because it is foreign.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pipeline.errors import redact
from pipeline.report.reconcile import JobResult, RunReport
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.s3 import Storage
from pipeline.text import printable

__all__ = ["ERRORS_NAME", "RESULTS_NAME", "error_line", "invalid_lines", "result_files", "result_line",
           "write_results"]

RESULTS_NAME = "results.jsonl"
ERRORS_NAME = "errors.jsonl"
#: the longest API detail an error line keeps (as JSON text)
MAX_DETAIL_CHARS = 4000


def _ordered(results: Iterable[JobResult]) -> list[JobResult]:
    return sorted(results, key=lambda r: (r.entry.shard, r.entry.line, r.entry.job_id))


def result_line(result: JobResult) -> dict[str, Any]:
    """One results.jsonl line."""
    entry = result.entry
    return {"id": entry.job.id, "shard": entry.shard, "line": entry.line, "variant": entry.variant or None,
            "job_id": entry.job_id, "state": result.state.value, "output": entry.output,
            "durations": result.durations, "credits": result.credits, "requests": result.requests,
            "request_ids": list(result.request_ids),
            "finished_at": result.finished_at.isoformat() if result.finished_at else None}


def _detail(detail: Any) -> Any:
    """The API's detail, kept as JSON when it is small and holds no secret, else as redacted text."""
    if detail is None:
        return None
    as_text = json.dumps(detail, ensure_ascii=False, default=str)
    cleaned = printable(redact(as_text))
    if cleaned == as_text and len(as_text) <= MAX_DETAIL_CHARS:
        return detail
    return cleaned[:MAX_DETAIL_CHARS]


def error_line(result: JobResult) -> dict[str, Any]:
    """One errors.jsonl line."""
    entry = result.entry
    return {"id": entry.job.id, "shard": entry.shard, "line": entry.line, "variant": entry.variant or None,
            "job_id": entry.job_id, "state": result.state.value, "output": entry.output,
            "reason": result.reason or result.state.value, "message": result.message,
            "http_status": result.http_status, "request_id": result.request_id, "detail": _detail(result.detail),
            "credits": result.credits}


def invalid_lines(report: RunReport) -> list[dict[str, Any]]:
    """A line for each manifest line that is not a valid job (it never ran): state ``invalid``, its problems."""
    lines = []
    for shard in report.shards:
        by_line: dict[int, list[str]] = {}
        for problem in shard.problems:
            if problem.line > 0:
                by_line.setdefault(problem.line, []).append(f"{problem.field}: {problem.message}")
        lines += [{"id": None, "shard": shard.name, "line": n, "variant": None, "job_id": None, "state": "invalid",
                   "output": None, "reason": "invalid", "message": printable("; ".join(messages)),
                   "http_status": None, "request_id": None, "detail": None, "credits": 0.0}
                  for n, messages in by_line.items()]
    return lines


def result_files(report: RunReport) -> tuple[bytes, bytes]:
    """The bytes of results.jsonl and errors.jsonl: one line per manifest line (an invalid one too), and the lines
    that did not succeed; both ordered by shard and line."""
    invalid = invalid_lines(report)
    ordered = _ordered(report.results)
    results = [result_line(r) for r in ordered] + [_as_result(line) for line in invalid]
    errors = [error_line(r) for r in ordered if r.state is not JobState.SUCCEEDED] + invalid

    def text(lines: list[dict[str, Any]]) -> bytes:
        lines.sort(key=lambda line: (line["shard"], line["line"], line["job_id"] or ""))
        return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()

    return text(results), text(errors)


def _as_result(invalid: dict[str, Any]) -> dict[str, Any]:
    return {**{k: invalid[k] for k in ("id", "shard", "line", "variant", "job_id", "state", "output")},
            "durations": {}, "credits": 0.0, "requests": 0, "request_ids": [], "finished_at": None}


def write_results(storage: Storage, prefix: S3Uri, report: RunReport) -> tuple[S3Uri, S3Uri]:
    """Write both files under the run's prefix (errors first, so a complete results.jsonl means both are there)."""
    results, errors = result_files(report)
    results_uri, errors_uri = prefix.child("/" + RESULTS_NAME), prefix.child("/" + ERRORS_NAME)
    storage.put_bytes(errors_uri, errors, content_type="application/x-ndjson")
    storage.put_bytes(results_uri, results, content_type="application/x-ndjson")
    return results_uri, errors_uri
