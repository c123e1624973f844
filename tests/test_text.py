"""Untrusted text is neutralised where it lands: control characters escaped, formula cells quoted, secrets redacted."""

from __future__ import annotations

import secrets

import pytest

from pipeline.errors import RejectedError, redact, redact_value, register_secret
from pipeline.text import printable, spreadsheet_cell


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, ünïcødé and emoji 🎧", "plain text, ünïcødé and emoji 🎧"),
    ("\x1b[2J\x1b[31mred\x1b[0m", "\\x1b[2J\\x1b[31mred\\x1b[0m"),
    ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
    ("c1 csi \x9b31m", "c1 csi \\x9b31m"),
    ("over\rwrite", "over\\x0dwrite"),
    ("bidi \u202eevil\u202c", "bidi \\u202eevil\\u202c"),
    ("tab\tkept", "tab\tkept"),
    ("one\nline", "one\\x0aline"),
])
def test_printable_escapes_every_control_character(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_keeps_line_feeds_when_multiline() -> None:
    assert printable("Traceback\n  \x1b]0;title\x07", multiline=True) == "Traceback\n  \\x1b]0;title\\x07"
    assert printable(42) == "42"


@pytest.mark.parametrize(("cell", "written"), [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("+1+1", "'+1+1"), ("-1+1", "'-1+1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("fine", "fine"), ("", ""), (-5.0, -5.0), (3, 3),
])
def test_spreadsheet_cells_that_start_like_a_formula_are_quoted(cell: object, written: object) -> None:
    assert spreadsheet_cell(cell) == written


# --- secrets

def test_redact_removes_the_registered_key_and_key_shaped_values() -> None:
    key = f"sk_{secrets.token_hex(24)}"
    register_secret(key)
    other = f"sk_{secrets.token_hex(24)}"  # never registered: shaped like a vendor key
    cases = {
        f"your key {key} is wrong": "your key *** is wrong",
        f"try {other}": "try ***",
        "xi-api-key: anything-at-all": "xi-api-key: ***",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl": "Authorization: Bearer ***",
        "sent bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0": "sent bearer ***",
        "https://x/feed?token=0123456789abcdefghij&page=2": "https://x/feed?token=***&page=2",
        '{"api_key": "0123456789abcdef0123"}': '{"api_key": "***"}',
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY": "AWS_SECRET_ACCESS_KEY=***",
        "key id AKIAIOSFODNN7EXAMPLE": "key id ***",
        ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101"
         "&X-Amz-Security-Token=FQoGZXIvYXdzE&X-Amz-Signature=0f1e2d3c4b5a"):
            ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
             "&X-Amz-Security-Token=***&X-Amz-Signature=***"),
    }
    for text, shown in cases.items():
        assert redact(text) == shown


@pytest.mark.parametrize("text", [
    "the token bucket is empty", "job 0123456789abcdef01234567 failed",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "voice_settings.stability: must be at most 1", "request-id 0123456789abcdef0123456789",
    "input s3://b/tokenizer-output-2024-episode-01.pcm does not exist", "S3 answered 403 SignatureDoesNotMatch",
])
def test_redact_leaves_ids_and_hashes_alone(text: str) -> None:
    assert redact(text) == text


def test_a_rejections_detail_is_stored_redacted_all_the_way_down() -> None:
    key = f"sk_{secrets.token_hex(24)}"
    register_secret(key)
    detail = [{"loc": ["header", "xi-api-key"], "msg": f"invalid key {key}", "input": key,
               key: {"nested": [f"echo {key}", 3, None]}}]
    error = RejectedError("the service rejected the request (422)", detail=detail)
    record = error.to_record()
    assert key not in repr(record)
    assert record["detail"][0]["msg"] == "invalid key ***"
    assert record["detail"][0]["***"] == {"nested": ["echo ***", 3, None]}
    assert redact_value({"n": 1.5, "ok": True}) == {"n": 1.5, "ok": True}
