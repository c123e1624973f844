"""The failure reasons are one list: every code has a description, and the README's table is that list."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.reasons import REASON_DESCRIPTIONS, Reason

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_reason_is_described() -> None:
    assert set(REASON_DESCRIPTIONS) == set(Reason)


def test_the_readme_lists_exactly_the_reasons() -> None:
    text = README.read_text()
    table = text[text.index("**Failure reasons.**"):text.index("**Exactly one output per job.**")]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.M)
    assert listed == [reason.value for reason in Reason]


def test_every_reason_the_library_sets_is_listed() -> None:
    """``reason="..."`` literals in the library name listed codes (f-string families are spelled from listed parts)."""
    root = Path(__file__).resolve().parent.parent / "pipeline"
    found = set()
    for path in root.rglob("*.py"):
        if "offline" in path.parts:
            continue
        found.update(re.findall(r'reason="([a-z_]+)"', path.read_text()))
    assert found - {r.value for r in Reason} == set()
