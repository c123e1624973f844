"""Event bodies: every string redacted and printable; the signature is HMAC-SHA256 over the exact body."""

from __future__ import annotations

import hashlib
import hmac
import json

from pipeline.run.notify import event_body, sign


def test_event_bodies_are_clean_and_signed() -> None:
    body = event_body("run.cancelled", "run-1", {"why": "key sk_" + "b" * 40 + "\x1b[2J", "counts": {"ok": 1}})
    data = json.loads(body)
    assert data["event"] == "run.cancelled" and data["run_id"] == "run-1" and data["counts"] == {"ok": 1}
    assert "b" * 40 not in data["why"] and "\x1b" not in data["why"]
    assert sign(body, "s3cret") == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
