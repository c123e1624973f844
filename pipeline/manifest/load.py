"""Manifests: files of jobs, one a line, read and checked without spending anything.

A manifest file is a *shard*: JSONL (one JSON object a line) or CSV (a header row, then one job a row), told apart by
the file name's suffix. Field names are the API's, exactly the fields of ``pipeline.jobs.Job``, and every line is
validated through that model. Every problem of every line is reported as ``FILE:LINE: field: message`` (line 0 is
the file as a whole), and a bad line never hides the good ones: the valid lines become ``ManifestEntry`` objects.

Beyond one line, ``load_manifests`` checks that no two jobs write the same output, that no job writes over another
job's input or onto a key another job's records or checkpoints use, that no output is a key the pipeline keeps for
itself (``pipeline.manifest.keys``), and that no two shards share a name.

A problem's text is the manifest's own text in part (field names, values): ``str(problem)`` shows its control
characters escaped, so printing it cannot drive the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.errors import ManifestError
from pipeline.keys import RECORD_SUFFIXES, WORK_SUFFIX, derived_keys
from pipeline.manifest.csv import read_csv, render_csv
from pipeline.manifest.fanout import expand_line
from pipeline.manifest.job import Job
from pipeline.manifest.keys import output_key_problems
from pipeline.manifest.lines import RawLine, RawShard, encoding_problem, read_jsonl
from pipeline.manifest.messages import FILE, LINE, problems_from_error
from pipeline.s3uri import S3Uri
from pipeline.text import printable

__all__ = [
    "ManifestEntry",
    "ManifestLimits",
    "ManifestProblem",
    "Shard",
    "check_output_prefix",
    "load_manifest",
    "load_manifests",
    "parse_manifest",
    "write_manifest",
]

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
OUTPUT_IS_INPUT = "is the same as the input; the result would overwrite its own source, write it to another key"


@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest; ``line`` 0 is the file as a whole."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.file}:{self.line}: {self.field}: {self.message}")


@dataclass(frozen=True)
class ManifestEntry:
    """One valid line: the job, its id and its output URI (given, or derived from the output prefix)."""

    shard: str  # the file's base name, e.g. "podcast.jsonl"
    line: int  # 1-based line number in the file (CSV: the header is line 1)
    job: Job
    job_id: str
    output: str
    raw: dict[str, Any]  # the line's fields as written (CSV: already typed), for writing retry manifests
    #: which combination of a fanned-out line this is ("voice_id=…, seed=…"); ``raw`` is then that combination's
    #: own concrete line, so a retry manifest re-runs only this combination
    variant: str = ""


@dataclass
class Shard:
    """One manifest file, read: its valid entries and every problem found."""

    name: str
    path: str | None
    entries: list[ManifestEntry]
    problems: list[ManifestProblem]
    text_sha256: str
    line_count: int = 0  # job lines read, valid or not (blank lines and a CSV header not counted)

    @property
    def label(self) -> str:
        """How problems name this file: its path as given, else its name."""
        return self.path or self.name


@dataclass(frozen=True)
class ManifestLimits:
    """What a manifest may refer to. Empty bucket lists allow any bucket."""

    allowed_input_buckets: tuple[str, ...] = ()
    allowed_output_buckets: tuple[str, ...] = ()
    max_line_bytes: int = 65536
    #: ``STS_RUNS_URI``: no output may lie under it (empty: under ``sts-runs/`` of any output bucket)
    runs_uri: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestLimits:
        return cls(allowed_input_buckets=tuple(settings.allowed_input_buckets),
                   allowed_output_buckets=tuple(settings.allowed_output_buckets), runs_uri=settings.runs_uri)


def check_output_prefix(output_prefix: str, limits: ManifestLimits | None = None) -> None:
    """Raise ``ManifestError`` unless the prefix is an ``s3://bucket[/prefix]`` URI in an allowed output bucket."""
    try:
        uri = S3Uri.parse(output_prefix, require_key=False)
    except ValueError as exc:
        raise ManifestError(f"output prefix {output_prefix!r}: {exc}") from None
    allowed = (limits or ManifestLimits()).allowed_output_buckets
    if allowed and uri.bucket not in allowed:
        raise ManifestError(f"output prefix {output_prefix!r}: {_not_allowed(uri.bucket, allowed, 'OUTPUT')}")


def parse_manifest(data: bytes, name: str, *, fmt: str | None = None, output_prefix: str | None = None,
                   limits: ManifestLimits | None = None) -> Shard:
    """Read and check one shard from its bytes; ``fmt`` is ``"jsonl"`` or ``"csv"`` (``None``: by the name's suffix)."""
    shard = _parse(data, name, None, fmt, output_prefix, limits or ManifestLimits())
    _check_across([shard], limits or ManifestLimits())
    return shard


def load_manifest(path: Path, *, output_prefix: str | None = None, limits: ManifestLimits | None = None) -> Shard:
    """Read and check one shard file."""
    return load_manifests([path], output_prefix=output_prefix, limits=limits)[0]


def load_manifests(paths: Sequence[Path], *, output_prefix: str | None = None,
                   limits: ManifestLimits | None = None) -> list[Shard]:
    """Read and check shard files, then check them against each other (outputs, inputs, shard names)."""
    limits = limits or ManifestLimits()
    shards = [_parse(_read_bytes(Path(path)), Path(path).name, str(path), None, output_prefix, limits)
              for path in paths]
    first_by_name: dict[str, Shard] = {}
    for shard in shards:
        first = first_by_name.setdefault(shard.name, shard)
        if first is not shard:
            # a run keys its shards by name: a second one would overwrite the first, so none of its jobs is loaded
            shard.problems.append(ManifestProblem(
                shard.label, 0, FILE, f"another shard has the same name ({first.label}); shard names must be unique, "
                                      "rename one of the files (none of this file's jobs was loaded)"))
            shard.entries = []
    _check_across(shards, limits)
    return shards


def write_manifest(path: Path, lines: Sequence[dict[str, Any]]) -> None:
    """Write manifest lines as JSONL or CSV (by the suffix), atomically; the file reads back to the same lines."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ManifestError(f"cannot tell the manifest format of {str(path)!r}; name it .jsonl or .csv")
    if fmt == "csv":
        text = render_csv(lines)
    else:
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    temporary = Path(f"{path}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8", newline="")
    os.replace(temporary, path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {str(path)!r}: {exc.strerror or exc}") from None


def _parse(data: bytes, name: str, path: str | None, fmt: str | None, output_prefix: str | None,
           limits: ManifestLimits) -> Shard:
    if output_prefix is not None:
        check_output_prefix(output_prefix, limits)
    shard = Shard(name=name, path=path, entries=[], problems=[], text_sha256=hashlib.sha256(data).hexdigest())
    if fmt is not None and fmt not in ("jsonl", "csv"):
        raise ManifestError(f"unknown manifest format {fmt!r}; use 'jsonl' or 'csv'")
    fmt = fmt or _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        shard.problems.append(ManifestProblem(
            shard.label, 0, FILE, "cannot tell the manifest format from the file name; name it .jsonl or .csv"))
        return shard
    problem = encoding_problem(data)
    if problem:
        shard.problems.append(ManifestProblem(shard.label, 0, FILE, problem))
        return shard
    raw: RawShard = read_csv(data, limits.max_line_bytes) if fmt == "csv" else read_jsonl(data, limits.max_line_bytes)
    shard.problems.extend(ManifestProblem(shard.label, line, where, message) for line, where, message in raw.problems)
    shard.line_count = len(raw.lines)
    if not raw.lines and not raw.problems:
        shard.problems.append(ManifestProblem(shard.label, 0, FILE, "the file is empty: it holds no job lines"))
    for line in raw.lines:
        entries, problems = _check_fanned_line(line, shard.name, output_prefix, limits)
        shard.problems.extend(ManifestProblem(shard.label, line.line, where, message) for where, message in problems)
        shard.entries.extend(entries)
    return shard


def _check_fanned_line(line: RawLine, shard_name: str, output_prefix: str | None,
                       limits: ManifestLimits) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
    """Every job of a line (one per voice × seed of a fanned-out line), or every problem of it, each once."""
    if line.values is None:
        return [], list(line.problems)
    expansion = expand_line(line.values, output_prefix)
    if expansion.problems:
        return [], [*line.problems, *expansion.problems]
    entries: list[ManifestEntry] = []
    problems: dict[tuple[str, str], None] = {}  # the same problem of every combination is reported once
    for combination in expansion.combinations:
        entry, found = _check_line(RawLine(line.line, combination.values, list(line.problems)), shard_name,
                                   combination.output_prefix, limits)
        problems.update(dict.fromkeys(found))
        if entry is not None:
            entries.append(replace(entry, variant=combination.variant))
    return ([] if problems else entries), list(problems)


def _check_line(line: RawLine, shard_name: str, output_prefix: str | None,
                limits: ManifestLimits) -> tuple[ManifestEntry | None, list[tuple[str, str]]]:
    """The entry for a line, or every problem it has (pydantic's, then the manifest's own)."""
    problems = list(line.problems)
    values = line.values
    if values is None:
        return None, problems
    overwrites_input = isinstance(values.get("output"), str) and values.get("output") == values.get("input")
    job: Job | None = None
    try:
        job = Job.model_validate(values)
    except ValidationError as exc:
        # the model's own output-is-input check has no field; ours below names it and says what to do
        problems += [problem for problem in problems_from_error(exc)
                     if not (overwrites_input and problem[0] == LINE)]
    if overwrites_input:
        problems.append(("output", OUTPUT_IS_INPUT))
    problems += _uri_problems(values, output_prefix, limits)
    if problems or job is None:
        output = _parsed(values.get("output"))
        if output is not None:  # a valid line gets these from ``_check_across``, naming any line it collides with
            problems += [("output", problem.message)
                         for problem in output_key_problems(output, runs_uri=limits.runs_uri)]
        return None, problems
    entry = ManifestEntry(shard=shard_name, line=line.line, job=job, job_id=job.job_id(output_prefix),
                          output=job.resolved_output(output_prefix), raw=values)
    return entry, []


def _uri_problems(values: dict[str, Any], output_prefix: str | None,
                  limits: ManifestLimits) -> list[tuple[str, str]]:
    """What the model does not check about the S3 URIs: folders, allowed buckets, an output to derive."""
    problems: list[tuple[str, str]] = []
    if values.get("output") is None and output_prefix is None:
        problems.append(("output", "is missing: give the line an output URI, or pass an output prefix "
                                   "(--output-prefix s3://bucket/prefix) to derive one"))
    for name, allowed, kind in (("input", limits.allowed_input_buckets, "INPUT"),
                                ("output", limits.allowed_output_buckets, "OUTPUT")):
        uri = _parsed(values.get(name))
        if uri is None:
            continue
        if uri.key.endswith("/"):
            problems.append((name, "names a folder (ends with '/'); give the object's full key"))
        if allowed and uri.bucket not in allowed:
            problems.append((name, _not_allowed(uri.bucket, allowed, kind)))
    return problems


def _parsed(value: Any) -> S3Uri | None:
    """The URI, if the value is one the model accepts (the model reports the others)."""
    try:
        return S3Uri.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _not_allowed(bucket: str, allowed: tuple[str, ...], kind: str) -> str:
    return (f"bucket {bucket!r} is not an allowed {kind.lower()} bucket ({', '.join(allowed)}); use one of those, "
            f"or add it to STS_ALLOWED_{kind}_BUCKETS")


#: what writing an output onto another job's derived key would do to that job
_COLLISION = {
    "provenance record": "that job would count as done without being converted",
    "failure record": "that job's success would delete it",
}


def _check_across(shards: list[Shard], limits: ManifestLimits) -> None:
    """Drop, with a problem each, the entries whose output repeats an earlier output, writes over any job's input,
    lands on a key another job's records or checkpoints use, or is refused for its key alone (``manifest.keys``)."""
    inputs: dict[str, str] = {}
    owners: dict[str, str] = {}  # every output -> the first line that writes it
    for shard in shards:
        for entry in shard.entries:
            inputs.setdefault(entry.job.input, f"{shard.label}:{entry.line}")
            owners.setdefault(entry.output, _where(shard, entry))
    outputs: dict[str, str] = {}
    for shard in shards:
        kept = []
        for entry in shard.entries:
            where = _where(shard, entry)
            messages = []
            if entry.output in outputs:
                messages.append(_same_output(entry, outputs[entry.output]))
            elif entry.output in inputs:
                messages.append(f"is the input of {inputs[entry.output]}; this job would overwrite that job's source")
            else:
                messages += _collisions(entry.output, owners)
            if not messages:
                messages += [problem.message for problem in
                             output_key_problems(S3Uri.parse(entry.output), runs_uri=limits.runs_uri)]
            if not messages:
                outputs[entry.output] = where
                kept.append(entry)
                continue
            shard.problems.extend(ManifestProblem(shard.label, entry.line, "output", message) for message in messages)
        shard.entries = kept
        shard.problems.sort(key=lambda problem: problem.line)


def _where(shard: Shard, entry: ManifestEntry) -> str:
    """``FILE:LINE``, plus the combination when the line fans out (two jobs of one line differ only there)."""
    return f"{shard.label}:{entry.line}" + (f" ({entry.variant})" if entry.variant else "")


def _same_output(entry: ManifestEntry, first: str) -> str:
    """The collision message, naming both combinations and the placeholders that would keep them apart."""
    if not entry.variant:
        return f"same output as {first}; each job needs its own output"
    return (f"{entry.variant}: same output ({entry.output}) as {first}; each job needs its own output: put "
            "{voice_id} and {seed} (and {stem} when inputs share an output) in the output template")


def _collisions(output: str, owners: dict[str, str]) -> list[str]:
    """How ``output`` lands on another line's derived keys (its records, its work prefix), naming that line."""
    found = []
    for suffix in RECORD_SUFFIXES:
        owner = output[:-len(suffix)] if output.endswith(suffix) else None
        if owner is not None and owner in owners:
            kind = next(kind for kind, key in derived_keys(owner).items() if key == output)
            found.append(f"is the {kind} of the job at {owners[owner]} ({owner}); {_COLLISION[kind]}: "
                         "choose another key")
    at = output.find(WORK_SUFFIX)
    while at >= 0:
        owner = output[:at]
        if owner in owners:
            found.append(f"lies under the work prefix of the job at {owners[owner]} ({owner}{WORK_SUFFIX}), where "
                         "that job keeps its segment checkpoints: it would be stitched in as a segment or deleted "
                         "when that job finishes; choose another key")
        at = output.find(WORK_SUFFIX, at + 1)
    return found
