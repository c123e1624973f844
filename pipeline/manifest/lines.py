"""A shard's bytes as raw lines: the line-size limit, UTF-8, BOM and CRLF handling, and JSONL objects.

Nothing here knows what a job is. A ``RawLine`` holds one line's fields as written, or the reasons it has none; every
line is read on its own, so a bad line never hides the good ones around it.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.manifest.messages import LINE, describe


@dataclass
class RawLine:
    """One job line: its 1-based number, its fields (``None`` if it could not be read) and its problems so far."""

    line: int
    values: dict[str, Any] | None
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class RawShard:
    """The job lines of a file, and the problems that belong to no job line (the file, a CSV header)."""

    lines: list[RawLine] = field(default_factory=list)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (line, field, message)


def encoding_problem(data: bytes) -> str | None:
    """Why the whole file cannot be read as UTF-8 text, if it is clearly in another encoding."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "the file is UTF-16; save it as UTF-8"
    return None


def text_lines(data: bytes, max_line_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """Every non-blank line as ``(number, text, problem)``; ``text`` is ``None`` when the line is unreadable.

    A UTF-8 BOM at the start and CRLF line ends are accepted. A line over ``max_line_bytes`` is not decoded at all.
    """
    data = data.removeprefix(codecs.BOM_UTF8)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        if len(raw) > max_line_bytes:
            yield number, None, (f"line is {len(raw)} bytes, over the limit of {max_line_bytes}; "
                                 "shorten it (large metadata belongs elsewhere)")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
                                 "save the file as UTF-8")
            continue
        yield number, text, None


def read_jsonl(data: bytes, max_line_bytes: int) -> RawShard:
    """Read a JSONL shard: one JSON object a line, blank lines skipped."""
    shard = RawShard()
    for number, text, problem in text_lines(data, max_line_bytes):
        if text is None:
            shard.lines.append(RawLine(number, None, [(LINE, problem or "unreadable")]))
        else:
            shard.lines.append(_json_line(number, text))
    return shard


class _NonStandardNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonStandardNumber(name)


def _json_line(number: int, text: str) -> RawLine:
    repeated: list[str] = []

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                repeated.append(key)
            obj[key] = value
        return obj

    try:
        value = json.loads(text, object_pairs_hook=unique_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return RawLine(number, None, [(LINE, _json_error_message(exc, text))])
    except _NonStandardNumber as exc:
        return RawLine(number, None, [(LINE, f"invalid JSON: {exc} is not a JSON number; write a number or null")])
    if not isinstance(value, dict):
        return RawLine(number, None, [(LINE, f"each line must be one JSON object {{...}}, got {describe(value)}")])
    problems = [(key, "given more than once in one object; keep one (the last would silently win)")
                for key in dict.fromkeys(repeated)]
    return RawLine(number, value, problems)


def _json_error_message(exc: json.JSONDecodeError, text: str) -> str:
    where = f"invalid JSON at column {exc.colno}"
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return f"{where}: the line ends before the JSON object is complete (cut short?)"
    if exc.msg == "Extra data":
        return f"{where}: more text after the JSON object; put one object on each line"
    return f"{where}: {exc.msg}"
