"""CSV shards: a header row, one job a row, cells coerced from text to each field's type before validation.

Cells are text, so each is converted by the type of its ``Job`` field: whole numbers, numbers, booleans
(``true/false/1/0/yes/no``, any case), JSON objects (``voice_settings``, ``metadata``); an empty cell leaves the field
unset. ``voice_settings`` may also be given as flattened columns such as ``voice_settings.stability``; the fan-out
columns ``voice_ids`` and ``seeds`` hold a JSON array or items separated by ``;``. Each row must
fit on one line, so an unclosed quote spoils only its own row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from pipeline.errors import ManifestError
from pipeline.manifest.job import Job, VoiceSettings
from pipeline.manifest.lines import RawLine, RawShard, text_lines
from pipeline.manifest.messages import FILE, LINE, describe, suggestion

HEADER = "(header)"
_FLAT_PREFIX = "voice_settings."
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_WHOLE_NUMBER = re.compile(r"^[+-]?\d+$")


def _to_bool(cell: str) -> bool:
    word = cell.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"must be true or false (or 1/0, yes/no), got {cell!r}")


def _to_int(cell: str) -> int:
    if not _WHOLE_NUMBER.match(cell.strip()):
        raise ValueError(f"must be a whole number, got {cell!r}")
    return int(cell)


def _to_float(cell: str) -> float:
    try:
        number = float(cell)
    except ValueError:
        raise ValueError(f"must be a number, got {cell!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {cell!r}")
    return number


def _json_cell(cell: str, expected: str) -> Any:
    """The cell read as JSON; a ValueError saying what was ``expected`` and where the JSON broke."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be {expected}; invalid JSON at column {exc.colno} of the cell: {exc.msg}") from None


def _to_object(cell: str) -> dict[str, Any]:
    value = _json_cell(cell, 'a JSON object such as {"key": 1}')
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object such as {{\"key\": 1}}, got {describe(value)}")
    return value


def _text_or_object(cell: str) -> Any:
    """A field that takes a word or an object (``master``: ``podcast`` or ``{"lufs": -16}``)."""
    return _to_object(cell) if cell.lstrip().startswith("{") else cell


def _converter(annotation: Any) -> Callable[[str], Any] | None:
    """How a cell becomes a value of this field type; ``None`` = keep the text."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(options) > 1 and any(isinstance(arg, type) and issubclass(arg, BaseModel) for arg in options):
            return _text_or_object
        annotation = options[0]
    if annotation is bool:
        return _to_bool
    if annotation is int:
        return _to_int
    if annotation is float:
        return _to_float
    if typing.get_origin(annotation) is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return _to_object
    return None


def _converters(model: type[BaseModel], prefix: str = "") -> dict[str, Callable[[str], Any] | None]:
    return {prefix + name: _converter(info.annotation) for name, info in model.model_fields.items()}


def _to_list(item: Callable[[str], Any] | None) -> Callable[[str], list[Any]]:
    """A fan-out cell: a JSON array (``["a","b"]``) or items separated by ``;`` (``a;b``)."""
    def convert(cell: str) -> list[Any]:
        text = cell.strip()
        if text.startswith("["):
            value = _json_cell(text, "a JSON array such as [1, 2] or items separated by ';'")
            if not isinstance(value, list):
                raise ValueError(f"must be a list, got {describe(value)}")
            return value
        parts = [part.strip() for part in text.split(";") if part.strip()]
        return [item(part) if item else part for part in parts]
    return convert


#: the fan-out columns (``pipeline.manifest.fanout``): several voices or seeds in one row
FANOUT_COLUMNS: dict[str, Callable[[str], Any]] = {"voice_ids": _to_list(None), "seeds": _to_list(_to_int)}
#: every column a CSV shard may have, with the conversion of its cells
COLUMNS: dict[str, Callable[[str], Any] | None] = {**_converters(Job), **FANOUT_COLUMNS,
                                                    **_converters(VoiceSettings, _FLAT_PREFIX)}


def read_csv(data: bytes, max_line_bytes: int) -> RawShard:
    """Read a CSV shard: the first non-blank line is the header, each further line one job."""
    shard = RawShard()
    lines = iter(text_lines(data, max_line_bytes))
    first = next(lines, None)
    if first is None:
        return shard
    number, text, problem = first
    if text is None:
        shard.problems.append((number, HEADER, f"cannot read the header: {problem}"))
        return shard
    header = _read_header(number, text, shard)
    if header is None:
        return shard
    width, columns = header
    for number, text, problem in lines:
        if text is None:
            shard.lines.append(RawLine(number, None, [(LINE, problem or "unreadable")]))
        else:
            shard.lines.append(_read_row(number, text, width, columns))
    if not shard.lines:
        shard.problems.append((0, FILE, "the file has a header but no job rows"))
    return shard


def _cells(text: str) -> list[str]:
    return next(csv.reader([text], strict=True))


def _read_header(number: int, text: str, shard: RawShard) -> tuple[int, list[tuple[int, str]]] | None:
    """The header's width and its usable columns as ``(index, name)``; problems with it go to the shard."""
    try:
        names = [cell.strip() for cell in _cells(text)]
    except csv.Error as exc:
        shard.problems.append((number, HEADER, f"cannot read the header row: {exc}"))
        return None
    if not any(name in COLUMNS for name in names) and any(
            name.startswith("s3://") or not re.match(r"^[A-Za-z_][\w.]*$", name) for name in names):
        shard.problems.append((number, HEADER, "the first row must be a header naming the columns, "
                               f"e.g. input,voice_id,output; found {text[:60]!r}"))
        return None
    columns: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name:
            shard.problems.append((number, HEADER, f"column {index + 1} has no name"))
        elif name in seen:
            shard.problems.append((number, name, "column appears more than once in the header; keep one"))
        elif name not in COLUMNS:
            shard.problems.append((number, name, f"unknown column; {suggestion(name, list(COLUMNS))}"))
        else:
            columns.append((index, name))
        seen.add(name)
    return len(names), columns


def _read_row(number: int, text: str, width: int, columns: list[tuple[int, str]]) -> RawLine:
    try:
        cells = _cells(text)
    except csv.Error as exc:
        return RawLine(number, None, [(LINE, f"cannot read the CSV row ({exc}); quote cells that hold commas or "
                                             "quotes, double the quotes inside them, and keep each row on one line")])
    if len(cells) != width:
        return RawLine(number, None, [(LINE, f"row has {len(cells)} cells but the header has {width} columns; "
                                             "quote cells that contain commas")])
    values: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for index, name in columns:
        cell = cells[index]
        if not cell.strip():
            continue
        convert = COLUMNS[name]
        try:
            value = convert(cell) if convert else cell
        except ValueError as exc:
            problems.append((name, str(exc)))
            continue
        if name.startswith(_FLAT_PREFIX):
            flat[name.removeprefix(_FLAT_PREFIX)] = value
        else:
            values[name] = value
    if flat:
        nested = values.setdefault("voice_settings", {})
        for key, value in flat.items():
            if key in nested:
                problems.append((_FLAT_PREFIX + key, "also set in the voice_settings column; give it in one place"))
            nested[key] = value
    return RawLine(number, values, problems)


def render_csv(lines: Sequence[dict[str, Any]]) -> str:
    """CSV text for manifest lines: the fields used, in the ``Job``'s order, in cells that read back the same."""
    used = {key for line in lines for key in line}
    known = [*Job.model_fields, *FANOUT_COLUMNS]
    unknown = sorted(used - set(known))
    if unknown:
        raise ManifestError(f"cannot write unknown manifest fields: {', '.join(unknown)}")
    names = [name for name in known if name in used]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for line in lines:
        writer.writerow([_cell(line.get(name)) for name in names])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ManifestError("a CSV cell cannot hold a line break; write this manifest as JSONL instead")
    return text
