"""Reports show others' text safely: no secret in any format, no control character on the terminal, no formula in CSV.

Records are given as S3 holds them, including ones written before a secret's shape was redacted on the way in, so
these tests also hold the report's own redaction.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.errors import InputError, RejectedError, register_secret
from pipeline.manifest.load import Shard, parse_manifest
from pipeline.report.html import render_html
from pipeline.report.reconcile import RunReport, classify
from pipeline.report.text import print_report, report_dict, write_csv
from pipeline.storage.examples import example_failure, example_identity

ESC = "\x1b]8;;http://evil.invalid\x07click\x1b]8;;\x07\x1b[2J"
FORMULA = '=HYPERLINK("http://evil.invalid","x")'


def _shard() -> Shard:
    lines: list[dict[str, object]] = [
        {"input": f"s3://in-bucket/{n}.wav", "voice_id": "voice1", "output": f"s3://out-bucket/{n}.mp3"}
        for n in (1, 2, 3)]
    lines.append({"input": "s3://in-bucket/4.wav", "voice_id": "voice1", "output": "s3://out-bucket/4.mp3",
                  f"x{ESC}": 1})
    return parse_manifest("".join(json.dumps(item) + "\n" for item in lines).encode(), "hostile.jsonl")


def _stored_failure(shard: Shard, index: int, record_error: dict[str, Any], state: str) -> dict[str, Any]:
    entry = shard.entries[index]
    identity = example_identity(job_id=entry.job_id, shard=entry.shard, line=entry.line, input_uri=entry.job.input,
                                output_uri=entry.output)
    stored = example_failure(identity, InputError("placeholder")).to_dict()
    return {**stored, "status": state, "error": record_error}


def _report(key: str, unregistered: str) -> RunReport:
    shard = _shard()
    rejection = RejectedError(f"the service rejected the request (422): bad key {key}",
                              detail=[{"loc": None, "msg": f"key {key} / {unregistered} is not valid"}],
                              request_id="req-1")
    # as an older worker stored them: the key and escapes raw in the message, a formula in the reason
    old = {"error_class": "ApiError", "reason": FORMULA, "message": f"{ESC} key was {key} and {unregistered}",
           "status": 400, "request_id": "+req"}
    results = [
        classify(shard.entries[0], where="hostile.jsonl:1", output_exists=False, committed=False, provenance=None,
                 failure=_stored_failure(shard, 0, rejection.to_record(), "rejected")),
        classify(shard.entries[1], where="hostile.jsonl:2", output_exists=False, committed=False, provenance=None,
                 failure=_stored_failure(shard, 1, old, "failed")),
        classify(shard.entries[2], where="hostile.jsonl:3", output_exists=False, committed=False, provenance=None,
                 failure=_stored_failure(shard, 2, {**old, "reason": "bad_input", "message": f"-{FORMULA}"},
                                         "failed")),
    ]
    return RunReport(shards=[shard], results=results, run_id="run-1")


def _every_format(report: RunReport, tmp_path: Path) -> dict[str, str]:
    terminal = io.StringIO()
    print_report(report, Console(file=terminal, width=200, force_terminal=False, color_system=None))
    write_csv(report, tmp_path / "report.csv")
    return {"json": json.dumps(report_dict(report), ensure_ascii=False), "csv": (tmp_path / "report.csv").read_text(),
            "html": render_html(report), "terminal": terminal.getvalue()}


def test_no_secret_in_any_report_format(tmp_path: Path) -> None:
    key = f"sk_{secrets.token_hex(24)}"
    register_secret(key)
    unregistered = f"sk_{secrets.token_hex(24)}"
    formats = _every_format(_report(key, unregistered), tmp_path)
    for name, text in formats.items():
        assert key not in text, name
        assert unregistered not in text, name
    assert "***" in formats["json"] and "***" in formats["csv"]


def test_the_terminal_report_shows_control_characters_escaped(tmp_path: Path) -> None:
    terminal = _every_format(_report("sk_" + "a" * 48, "x" * 8), tmp_path)["terminal"]
    assert "\x1b" not in terminal and "\x07" not in terminal
    assert "\\x1b]8;;http://evil.invalid\\x07click" in terminal


def test_csv_cells_that_start_like_a_formula_are_text(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(_every_format(_report("k" * 8, "y" * 8), tmp_path)["csv"])))
    failed = {row["line"]: row for row in rows}
    assert failed["2"]["reason"] == "'" + FORMULA
    assert failed["2"]["request_id"] == "'+req"
    assert failed["3"]["message"] == "'-" + FORMULA
    assert all(not value.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for value in row.values())
    invalid = [row for row in rows if row["state"] == "invalid"]
    assert invalid and invalid[0]["reason"].startswith("x\x1b")  # the CSV keeps the text; only formulas are quoted
