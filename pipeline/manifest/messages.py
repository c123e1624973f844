"""Messages a user can act on, for what pydantic found wrong with a manifest line.

pydantic's own messages ("Input should be a valid integer") say what is wrong but not with what value, nor what would be
right; these name the value that was given, the allowed range or choices, and the closest known name for a typo.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError

from pipeline.formats import FILE_FORMATS, OUTPUT_FORMATS
from pipeline.manifest.job import Job, VoiceSettings

#: fields whose value must be one of a fixed set of names
CHOICES: dict[str, tuple[str, ...]] = {
    "file_format": FILE_FORMATS,
    "output_format": tuple(OUTPUT_FORMATS),
}
_NESTED: dict[str, type[BaseModel]] = {"voice_settings": VoiceSettings}

#: the ``field`` of a problem about a line as a whole, and about the file as a whole
LINE = "(line)"
FILE = "(file)"


def describe(value: Any) -> str:
    """A short, JSON-flavoured description of a value for a message: ``the string "3"``, ``true``, ``an array``."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return f"the string {text if len(text) <= 60 else text[:57] + '...'}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def suggestion(name: str, known: tuple[str, ...] | list[str]) -> str:
    """``"did you mean 'x'?"`` for the closest known name, or the list of known names when nothing is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"expected one of: {', '.join(known)}"


def unknown_field_message(name: str, known: tuple[str, ...] | list[str]) -> str:
    return f"unknown field; {suggestion(name, known)}"


def known_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def problems_from_error(exc: ValidationError) -> list[tuple[str, str]]:
    """Every error of a failed ``Job`` validation as ``(field, message)``; nested fields as ``voice_settings.speed``."""
    return [_problem(error) for error in exc.errors()]


def _problem(error: Any) -> tuple[str, str]:
    loc = tuple(str(part) for part in error["loc"])
    field = ".".join(loc) if loc else LINE
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return field, "is required but missing"
    if kind == "extra_forbidden":
        owner = _NESTED.get(loc[0], Job) if len(loc) > 1 else Job
        return field, unknown_field_message(loc[-1], known_fields(owner))
    if field in CHOICES and isinstance(value, str) and kind in ("literal_error", "value_error"):
        choices = CHOICES[field]
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return field, f"unknown {field} {value!r}; {hint}one of: {', '.join(choices)}"
    if kind in _TYPE_NAMES:
        return field, f"must be {_TYPE_NAMES[kind]}, got {describe(value)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return field, f"must be {_range_text(loc, error.get('ctx', {}))}, got {describe(value)}"
    if kind == "string_too_long":
        return field, f"must be at most {error['ctx']['max_length']} characters, got {len(value)}"
    if kind == "value_error":
        return field, str(error["msg"]).removeprefix("Value error, ")
    return field, str(error["msg"])


_TYPE_NAMES = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false (unquoted JSON booleans)",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "finite_number": "a finite number",
}


def _range_text(loc: tuple[str, ...], ctx: dict[str, Any]) -> str:
    low, high = _bounds(loc)
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    if "ge" in ctx:
        return f"at least {_number(ctx['ge'])}"
    if "le" in ctx:
        return f"at most {_number(ctx['le'])}"
    if "gt" in ctx:
        return f"greater than {_number(ctx['gt'])}"
    return f"less than {_number(ctx.get('lt'))}"


def _bounds(loc: tuple[str, ...]) -> tuple[Any, Any]:
    """The inclusive range a field's metadata declares, so a message can give both ends at once."""
    model: type[BaseModel] = _NESTED.get(loc[0], Job) if len(loc) > 1 else Job
    info = model.model_fields.get(loc[-1])
    low = high = None
    for constraint in info.metadata if info else ():
        if isinstance(constraint, Ge):
            low = constraint.ge
        elif isinstance(constraint, Le):
            high = constraint.le
    return low, high


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
