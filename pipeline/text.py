"""Untrusted text made safe where it lands: a terminal, a log line, a spreadsheet cell.

Manifests, object keys and the API's messages are written by others. Printed as they are, an ESC sequence in them
can recolour, move or rewrite what a terminal shows (or a log viewer), a line break can forge a log line, and a CSV
cell that starts with ``=`` is run as a formula by spreadsheets. These two functions are the one place that handles
that; everything that prints or writes such text calls them.
"""

from __future__ import annotations

import re

__all__ = ["printable", "spreadsheet_cell"]

# C0 controls but tab and line feed, DEL, C1 controls, and the Unicode bidi overrides/isolates that reorder text
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``) instead of acting.

    Tabs stay; line feeds stay only with ``multiline`` (a traceback, a table cell), else they are escaped too, so
    one message stays one line.
    """
    value = text if isinstance(text, str) else str(text)
    return (_UNSAFE if multiline else _UNSAFE_ONE_LINE).sub(_escape, value)


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a string that starts like a formula gets a leading ``'``.

    Numbers are left alone (they are not formulas, and a negative number stays a number).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
