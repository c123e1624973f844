"""``manifest from-prefix``: every audio object under an S3 prefix, as manifest shards of fan-out lines.

A dataset night starts from a folder of clips. The listing is streamed page by page straight into shard files, so
memory stays flat however many objects the folder holds, and S3 lists keys in order, so the same listing always
gives byte-identical shards (a re-run of the night maps to the same job ids and skips what is done).

Each clip becomes one line that fans out to every voice × seed (``pipeline.manifest.fanout``), with the output
``<output prefix>/{voice_id}/<key under the prefix>[.{seed}].{ext}``: the whole source key is kept (extension too),
so two clips can never share an output, and the line's ``id`` is that key, so each dataset row names its clip.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.errors import ManifestError
from pipeline.formats import DEFAULT_MODEL_ID, DEFAULT_OUTPUT_FORMAT
from pipeline.manifest.load import parse_manifest
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import ObjectInfo, Storage

__all__ = ["AUDIO_EXTENSIONS", "PrefixOptions", "PrefixResult", "check_options", "lines_from_listing",
           "write_prefix_shards"]

#: what is taken as audio by its name: the containers the decoder's sandbox accepts, and raw PCM
AUDIO_EXTENSIONS = frozenset({".wav", ".w64", ".flac", ".mp3", ".aac", ".ogg", ".oga", ".opus", ".m4a", ".mp4",
                              ".aif", ".aiff", ".aifc", ".caf", ".pcm", ".raw"})
SHARD_NAME = "prefix-{:05d}.jsonl"
#: the manifest's ``id`` is capped at this many characters; longer keys get no id (the input still names them)
_MAX_ID = 200


@dataclass(frozen=True)
class PrefixOptions:
    """What every line gets: the voices and seeds it fans out to, the model, the format, where outputs go."""

    voices: tuple[str, ...]
    output_prefix: str
    seeds: tuple[int, ...] = ()
    model_id: str = DEFAULT_MODEL_ID
    output_format: str = DEFAULT_OUTPUT_FORMAT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard_size: int = 1000


@dataclass
class PrefixResult:
    """What a listing became: the shard files, lines and jobs written, and what was left out and why."""

    shards: list[Path] = field(default_factory=list)
    lines: int = 0
    jobs: int = 0
    not_audio: int = 0
    filtered: int = 0
    unusable: list[str] = field(default_factory=list)  # "key: why" for audio keys no line can name
    removed: list[Path] = field(default_factory=list)  # stale shards of an earlier, longer listing


def _listing_prefix(prefix: S3Uri) -> str:
    """The key prefix to list: a folder, so ``clips`` does not also take ``clips-old/``."""
    return prefix.key if not prefix.key or prefix.key.endswith("/") else prefix.key + "/"


def check_options(source: S3Uri, options: PrefixOptions) -> None:
    """``ManifestError`` with every problem a line with these options would have, before anything is listed."""
    if not options.voices:
        raise ManifestError("give at least one --voice")
    if options.shard_size < 1:
        raise ManifestError("--shard-size must be at least 1")
    out = S3Uri.parse(options.output_prefix.rstrip("/") + "/x")
    listed = _listing_prefix(source)
    if out.bucket == source.bucket and out.key.startswith(listed):
        raise ManifestError(f"the output prefix {options.output_prefix} lies under s3://{source.bucket}/{listed}: the "
                            "next listing would take tonight's outputs as clips; write outputs elsewhere")
    sample = _line(S3Uri(source.bucket, listed + "sample.wav"), "sample.wav", options)
    shard = parse_manifest((json.dumps(sample) + "\n").encode(), "from-prefix.jsonl")
    if shard.problems:
        raise ManifestError("the options make invalid lines: " + "; ".join(
            f"{problem.field}: {problem.message}" for problem in shard.problems))


def lines_from_listing(objects: Iterable[ObjectInfo], source: S3Uri, options: PrefixOptions,
                       result: PrefixResult) -> Iterator[dict[str, Any]]:
    """One manifest line per audio object the filters keep, in listing order; counts the rest in ``result``."""
    listed = _listing_prefix(source)
    for info in objects:
        relative = info.uri.key[len(listed):]
        if not relative or relative.endswith("/"):
            continue  # the folder marker itself
        if Path(relative).suffix.lower() not in AUDIO_EXTENSIONS:
            result.not_audio += 1
            continue
        if not _kept(relative, options):
            result.filtered += 1
            continue
        if "{" in relative or "}" in relative:
            result.unusable.append(f"{info.uri}: its key holds '{{' or '}}', which an output template cannot name")
            continue
        if info.size_bytes == 0:
            result.unusable.append(f"{info.uri}: empty (0 bytes)")
            continue
        yield _line(info.uri, relative, options)


def _kept(relative: str, options: PrefixOptions) -> bool:
    """``--include`` (any matches; none given: all) and then ``--exclude`` (none matches), on the key under the
    prefix; ``*`` matches across ``/`` too."""
    if options.include and not any(fnmatch.fnmatchcase(relative, glob) for glob in options.include):
        return False
    return not any(fnmatch.fnmatchcase(relative, glob) for glob in options.exclude)


def _line(uri: S3Uri, relative: str, options: PrefixOptions) -> dict[str, Any]:
    seed_part = ".{seed}" if options.seeds else ""
    line: dict[str, Any] = {"input": str(uri)}
    if len(options.voices) == 1:
        line["voice_id"] = options.voices[0]
    else:
        line["voice_ids"] = list(options.voices)
    if len(options.seeds) == 1:
        line["seed"] = options.seeds[0]
    elif options.seeds:
        line["seeds"] = list(options.seeds)
    line["model_id"] = options.model_id
    line["output_format"] = options.output_format
    line["output"] = f"{options.output_prefix.rstrip('/')}/{{voice_id}}/{relative}{seed_part}.{{ext}}"
    if len(relative) <= _MAX_ID:
        line["id"] = relative
    return line


def write_prefix_shards(storage: Storage, source: S3Uri, options: PrefixOptions, out_dir: Path) -> PrefixResult:
    """List ``source`` (paginated) and write its lines as shards of ``options.shard_size`` lines into ``out_dir``.

    Each shard is written to a temporary file and moved into place whole; shards of an earlier, longer listing that
    this one no longer fills are removed (``validate out/*.jsonl`` would otherwise run last night's lines too).
    """
    check_options(source, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PrefixResult()
    combinations = len(options.voices) * max(1, len(options.seeds))
    handle: IO[str] | None = None
    in_shard = 0
    for line in lines_from_listing(storage.list(source.bucket, _listing_prefix(source)), source, options, result):
        if handle is None or in_shard == options.shard_size:
            _close(handle, result)
            handle, in_shard = _open(out_dir, len(result.shards)), 0
            result.shards.append(out_dir / SHARD_NAME.format(len(result.shards)))
        handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        in_shard += 1
        result.lines += 1
        result.jobs += combinations
    _close(handle, result)
    result.removed = _remove_stale(out_dir, len(result.shards))
    return result


def _open(out_dir: Path, index: int) -> IO[str]:
    return open(out_dir / f".{SHARD_NAME.format(index)}.tmp-{os.getpid()}", "w", encoding="utf-8", newline="")


def _close(handle: IO[str] | None, result: PrefixResult) -> None:
    if handle is None:
        return
    handle.close()
    os.replace(handle.name, result.shards[-1])


def _remove_stale(out_dir: Path, count: int) -> list[Path]:
    removed = []
    index = count
    while (out_dir / SHARD_NAME.format(index)).exists():
        (out_dir / SHARD_NAME.format(index)).unlink()
        removed.append(out_dir / SHARD_NAME.format(index))
        index += 1
    return removed
