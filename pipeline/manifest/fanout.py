"""Fan-out: one manifest line that names several voices and seeds becomes one concrete line per combination.

A dataset night renders the same clips in several voices, often with several seeds each. Rather than make the user
write (and keep unique) one line per clip × voice × seed, a line may give ``voice_ids: [..]`` instead of ``voice_id``
and ``seeds: [..]`` instead of ``seed``; ``output`` (or the output prefix) may name the combination with the
placeholders ``{stem}``, ``{id}``, ``{voice_id}``, ``{seed}`` and ``{ext}``.

Each combination is expanded into exactly the line a user would have written for it by hand (``voice_id`` and
``seed`` set, placeholders filled in), and that concrete line is what gets validated, hashed into a job id and
written to a retry manifest. So an expanded job has the same id as the equivalent single line, a re-run skips what
is done, and retrying one failed combination re-runs only that one.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.formats import DEFAULT_OUTPUT_FORMAT, MAX_SEED, OUTPUT_FORMATS
from pipeline.manifest.job import _VOICE_ID

__all__ = ["FANOUT_FIELDS", "MAX_COMBINATIONS", "PLACEHOLDERS", "Combination", "Expansion", "expand_line",
           "fill_template", "has_placeholders"]

#: the list fields a line may give instead of the single one, and the single field each stands for
FANOUT_FIELDS = {"voice_ids": "voice_id", "seeds": "seed"}
PLACEHOLDERS = ("stem", "id", "voice_id", "seed", "ext")
#: a line expanding to more jobs than this is refused: almost surely a mistake, and each job is paid for
MAX_COMBINATIONS = 10_000
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Combination:
    """One concrete line of an expanded one: its fields, the output prefix it derives from, and its label."""

    values: dict[str, Any]
    output_prefix: str | None
    variant: str = ""  # "voice_id=…, seed=…" for a fanned-out line; empty for a plain one


@dataclass
class Expansion:
    """A line's combinations, or the problems (``(field, message)``) that keep it from expanding."""

    combinations: list[Combination] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def has_placeholders(text: str) -> bool:
    return bool(_PLACEHOLDER.search(text))


def fill_template(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{name}`` replaced; ``KeyError`` names a placeholder ``values`` lacks.

    Only whole ``{name}`` tokens are replaced (no format specs, no attribute access): a template is manifest text.
    """
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def expand_line(values: dict[str, Any], output_prefix: str | None) -> Expansion:
    """Every concrete line ``values`` stands for (one for a plain line without placeholders)."""
    expansion = Expansion()
    voices = _list_field(values, "voice_ids", _voice_problem, expansion.problems)
    seeds = _list_field(values, "seeds", _seed_problem, expansion.problems)
    if expansion.problems:
        return expansion
    count = len(voices or [None]) * len(seeds or [None])
    if count > MAX_COMBINATIONS:
        expansion.problems.append(("voice_ids", f"voice_ids × seeds make {count:,} jobs, over the limit of "
                                                f"{MAX_COMBINATIONS:,} a line; split the line"))
        return expansion
    base = {key: value for key, value in values.items() if key not in FANOUT_FIELDS}
    for voice, seed in itertools.product(voices or [None], seeds or [None]):
        concrete = dict(base)
        label = []
        if voices is not None:
            concrete["voice_id"] = voice
            label.append(f"voice_id={voice}")
        if seeds is not None:
            concrete["seed"] = seed
            label.append(f"seed={seed}")
        combination = _filled(concrete, output_prefix, ", ".join(label), expansion.problems)
        if combination is None:
            return expansion
        expansion.combinations.append(combination)
    return expansion


def _list_field(values: dict[str, Any], name: str, check: Any, problems: list[tuple[str, str]]) -> list[Any] | None:
    """The list a fan-out field gives (``None`` when the line does not use it); problems with it go to ``problems``."""
    if name not in values:
        return None
    single = FANOUT_FIELDS[name]
    items = values[name]
    if values.get(single) is not None:
        problems.append((name, f"given together with {single}; give one {single} or a list of {name}, not both"))
    elif not isinstance(items, list) or not items:
        problems.append((name, f"must be a non-empty list such as [..]; for one value give {single} instead"))
    else:
        for index, item in enumerate(items):
            message = check(item)
            if message:
                problems.append((name, f"item {index + 1} ({item!r}) {message}"[:300]))
        counts = Counter(json.dumps(item, sort_keys=True) for item in items)  # items may be unhashable (a dict)
        repeated = sorted(key for key, count in counts.items() if count > 1)
        if repeated:
            problems.append((name, f"lists {', '.join(repeated)} more than once; each combination would be the "
                                   "same job twice"))
    return items if not problems else None


def _voice_problem(item: Any) -> str | None:
    if not isinstance(item, str) or not _VOICE_ID.match(item):
        return "must be a voice id: 1-64 letters, digits, '_' or '-'"
    return None


def _seed_problem(item: Any) -> str | None:
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_SEED:
        return f"must be a whole number from 0 to {MAX_SEED}"
    return None


def _filled(concrete: dict[str, Any], output_prefix: str | None, variant: str,
            problems: list[tuple[str, str]]) -> Combination | None:
    """The combination with its output (or output prefix) template filled in, or ``None`` with a problem."""
    output = concrete.get("output")
    names = {"stem": _stem(concrete.get("input")), "voice_id": concrete.get("voice_id"), "ext": _ext(concrete)}
    if isinstance(concrete.get("id"), str):
        names["id"] = concrete["id"]
    if isinstance(concrete.get("seed"), int) and not isinstance(concrete.get("seed"), bool):
        names["seed"] = str(concrete["seed"])
    # a value the line cannot give because another field is wrong stays the literal placeholder: the model then
    # reports that field (an unknown output_format, a bad voice_id) rather than the template
    filled = {key: value if isinstance(value, str) else f"{{{key}}}" for key, value in names.items()
              if isinstance(value, str) or key in ("stem", "voice_id", "ext")}
    prefix = output_prefix
    for where, template in (("output", output if isinstance(output, str) else None), ("output prefix", prefix)):
        if template is None or not has_placeholders(template):
            continue
        try:
            text = fill_template(template, filled)
        except KeyError as missing:
            problems.append(("output", _missing_message(where, missing.args[0])))
            return None
        if where == "output":
            concrete["output"] = text
        else:
            prefix = text
    return Combination(concrete, prefix, variant)


def _missing_message(where: str, name: str) -> str:
    if name not in PLACEHOLDERS:
        return (f"the {where} uses the unknown placeholder {{{name}}}; the placeholders are "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    need = {"id": "an id", "seed": "a seed or seeds"}[name]
    return f"the {where} uses {{{name}}}, which this line cannot fill; give the line {need}"


def _stem(uri: Any) -> str | None:
    """The input key's last segment without its extension (``s3://b/clips/a.wav`` → ``a``)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        return None
    name = uri.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem or None


def _ext(values: dict[str, Any]) -> str | None:
    fmt = values.get("output_format", DEFAULT_OUTPUT_FORMAT)
    spec = OUTPUT_FORMATS.get(fmt) if isinstance(fmt, str) else None
    return spec.extension if spec else None
