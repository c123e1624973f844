"""A reconcile report as one JSON object, as CSV (one row per line of the manifests), and as a terminal table.

The JSON object (``report_dict``) is the report's single source of numbers: the HTML page is drawn from it too.

Much of a report is others' text (manifest names and fields, object keys, the API's messages): messages are redacted
once more on the way in (records written before a secret's shape was known), the terminal shows every such text with
its control characters escaped (``pipeline.text.printable``), and CSV text cells that start like a formula get a
leading ``'`` so spreadsheets show them as text.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.errors import redact
from pipeline.report.reconcile import Group, JobResult, RunReport, ShardSummary
from pipeline.states import LEDGER_STATES, JobState
from pipeline.text import printable, spreadsheet_cell

REPORT_SCHEMA = "sts-pipeline/reconcile"
SCHEMA_VERSION = 1
EXAMPLES = 5  # example lines kept per failure reason or rejection message
CSV_COLUMNS = ("shard", "line", "job_id", "state", "reason", "message", "output", "credits", "drift_ms", "lufs",
               "flags", "request_id", "finished_at")
_LISTED = 10  # lines the terminal lists before "... and N more"


def credits(value: float) -> float:
    """Credits as reported: rounded to thousandths, the precision the API bills in."""
    return round(value, 3)


def report_dict(report: RunReport, *, examples: int = EXAMPLES) -> dict[str, Any]:
    """The whole report as one JSON-able object."""
    totals = report.totals()
    summaries = report.shard_summaries()
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "run_id": report.run_id,
        "generated_at": report.generated_at.isoformat(),
        "all_succeeded": report.all_succeeded,
        "totals": _counts(totals),
        "shards": [{"name": s.name, "file": s.label, **_counts(s)} for s in summaries],
        "failures": [_group(g, "reason", examples) for g in report.groups(JobState.FAILED)],
        "rejected": [_group(g, "message", examples) for g in report.groups(JobState.REJECTED)],
        "deferred": [_group(g, "reason", examples) for g in report.groups(JobState.DEFERRED)],
        "missing": [_job(r) for r in report.in_state(JobState.MISSING)],
        "orphans": [{**_job(r), "state": r.state.value} for r in report.orphans],
        "invalid": [{"where": f"{p.file}:{p.line}", "field": p.field, "message": redact(p.message)}
                    for p in report.problems],
        "quality": {
            "measured": sum(1 for r in report.in_state(JobState.SUCCEEDED) if r.quality),
            "flags": dict(sorted(report.flag_counts().items(), key=lambda item: (-item[1], item[0]))),
            "drift_ms": _stats(report.measured("drift_ms")),
            "lufs": _stats(report.measured("lufs")),
        },
        "cost": {"credits": credits(totals.credits), "requests": totals.requests,
                 "by_shard": {s.name: credits(s.credits) for s in summaries}},
        "throughput": [{"minute": minute.strftime("%Y-%m-%dT%H:%MZ"), "finished": sum(states.values()),
                        "succeeded": states.get(JobState.SUCCEEDED, 0)} for minute, states in report.throughput()],
    }


def _counts(summary: ShardSummary) -> dict[str, Any]:
    return {"lines": summary.lines, "jobs": summary.jobs, **{o.value: summary.counts[o] for o in LEDGER_STATES},
            "invalid": summary.invalid, "credits": credits(summary.credits), "requests": summary.requests}


def _group(group: Group, key: str, examples: int) -> dict[str, Any]:
    return {
        key: redact(group.key) if isinstance(group.key, str) else group.key,
        "count": group.count,
        "error_classes": sorted({r.error_class for r in group.results if r.error_class}),
        "examples": [{"where": r.where, "job_id": r.entry.job_id, "message": _redacted(r.message),
                      "status": r.http_status,
                      "request_id": r.request_id} for r in group.results[:examples]],
    }


def _redacted(text: str | None) -> str | None:
    return redact(text) if text else text


def _job(result: JobResult) -> dict[str, Any]:
    return {"where": result.where, "job_id": result.entry.job_id, "output": result.entry.output}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:  # nearest-rank percentile: always one of the measured values
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)

    return {"count": len(ordered), "min": round(ordered[0], 3), "median": rank(0.5), "p95": rank(0.95),
            "max": round(ordered[-1], 3)}


# --- CSV

def write_csv(report: RunReport, path: Path) -> None:
    """One row per manifest line: every job with its state, then every invalid line as state ``invalid``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in report.results:
            writer.writerow([_text(r.entry.shard), r.entry.line, _text(r.entry.job_id), r.state.value,
                             _text(r.reason or ""), _text(redact(r.message or "")), _text(r.entry.output),
                             credits(r.credits) if r.credits else "", _cell(r.drift_ms), _cell(r.lufs),
                             _text(" ".join(r.flags)), _text(r.request_id or ""),
                             r.finished_at.isoformat() if r.finished_at else ""])
        for shard in report.shards:
            for p in shard.problems:
                writer.writerow([_text(shard.name), p.line, "", "invalid", _text(p.field), _text(redact(p.message)),
                                 "", "", "", "", "", "", ""])


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _text(value: str) -> object:
    """A cell of others' text: shown by spreadsheets as text, never run as a formula."""
    return spreadsheet_cell(value)


# --- terminal

def print_report(report: RunReport, console: Console) -> None:
    """The per-shard table, then what did not succeed and why, then a one-line verdict."""
    data = report_dict(report, examples=3)
    console.print(_shard_table(data))
    for title, key, rows in (("Failed, by reason", "reason", data["failures"]),
                             ("Rejected by the API (422)", "message", data["rejected"]),
                             ("Deferred (not started)", "reason", data["deferred"])):
        if rows:
            console.print(_group_table(title, key, rows))
    for title, rows in (("Orphans: output without a provenance record", data["orphans"]),
                        ("Missing: no record at all (never ran, or not yet)", data["missing"])):
        if rows:
            console.print(Text(f"{title} ({len(rows)})", style="bold"))
            for row in rows[:_LISTED]:
                console.print(Text(printable(f"  {row['where']}  {row['output']}")))
            if len(rows) > _LISTED:
                console.print(Text(f"  ... and {len(rows) - _LISTED} more (--json or --csv lists them all)"))
    if data["invalid"]:
        console.print(Text(f"Invalid lines, never enqueued ({len(data['invalid'])})", style="bold"))
        for row in data["invalid"][:_LISTED]:
            console.print(Text(printable(f"  {row['where']}: {row['field']}: {row['message']}")))
    if data["quality"]["flags"]:
        console.print(Text("Quality flags: " + ", ".join(f"{flag} {count}" for flag, count
                                                          in data["quality"]["flags"].items())))
    console.print(Text(_verdict(data), style="bold green" if data["all_succeeded"] else "bold red"))


def _shard_table(data: dict[str, Any]) -> Table:
    title = printable(f"run {data['run_id']}" if data["run_id"] else "reconcile")
    table = Table(title=title)
    columns = ("lines", *(o.value for o in LEDGER_STATES), "invalid", "credits")
    table.add_column("shard")
    for column in columns:
        table.add_column(column, justify="right")
    for row in data["shards"]:
        table.add_row(Text(printable(row["name"])), *(_figure(row[c]) for c in columns))
    table.add_row(Text("total", style="bold"), *(Text(_figure(data["totals"][c]), style="bold") for c in columns))
    return table


def _group_table(title: str, key: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, show_lines=True)
    table.add_column(key)
    table.add_column("jobs", justify="right")
    table.add_column("examples")
    for row in rows:
        examples = "\n".join(printable(f"{e['where']}: {e['message']}" if key == "reason" else e["where"])
                             for e in row["examples"])
        table.add_row(Text(printable(row[key])), str(row["count"]), Text(examples))
    return table


def _figure(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}".rstrip("0").rstrip(".")


def retry_command(data: dict[str, Any]) -> str:
    """The command that re-runs what did not succeed in a report (``report_dict``'s form)."""
    return f"sts-pipeline retry --run {data['run_id']}" if data["run_id"] else "sts-pipeline retry MANIFEST..."


def _verdict(data: dict[str, Any]) -> str:
    totals = data["totals"]
    if data["all_succeeded"]:
        return f"all {totals['succeeded']} jobs succeeded"
    left = totals["lines"] - totals["succeeded"]
    return (f"{left} of {totals['lines']} lines did not succeed; re-run the failed, deferred, orphaned and missing "
            f"ones: {retry_command(data)}")
