"""What a run made, episode by episode, from S3 alone (like ``reconcile``): the facts a feed item needs.

A succeeded job gives its output's URL under the public base, its exact byte length (the object's size as S3
reports it, not a figure from a record), its MIME type, duration and sha256 (from provenance: the tagged file's).
Every other job is listed as not converted, with its state and reason, so the user sees what the feed leaves out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from pipeline.manifest.load import ManifestEntry, Shard
from pipeline.report.reconcile import reconcile
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.records import ProvenanceRecord, provenance_uri
from pipeline.storage.s3 import Storage
from pipeline.text import printable

#: the namespace of the new GUIDs (a fixed uuid5 namespace: the same run and output always give the same GUID)
GUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/sts-pipeline/feed-guid")


@dataclass(frozen=True)
class ConvertedEpisode:
    source_guid: str  # the original item's GUID
    guid: str  # the new item's
    url: str
    length: int
    mime_type: str
    duration_s: float | None
    sha256: str | None


def source_guid(entry: ManifestEntry) -> str:
    """The original item's GUID: ``metadata.guid`` as ``from-feed`` writes it, else the line's ``id``."""
    meta = entry.job.metadata or {}
    return str(meta.get("guid") or entry.job.id or entry.job_id)


def new_guid(original: str, output: str) -> str:
    name = original + "\n" + output
    return f"urn:uuid:{uuid.uuid5(GUID_NAMESPACE, name)}"


def public_url(base_url: str, output: S3Uri) -> str:
    """The output's URL: ``--base-url`` stands for the root of the output bucket."""
    return f"{base_url.rstrip('/')}/{quote(output.key)}"


def _converted(storage: Storage, entry: ManifestEntry, base_url: str) -> ConvertedEpisode | str:
    output = S3Uri.parse(entry.output)
    found = storage.get_json(provenance_uri(output))
    info = storage.head(output)
    if found is None or info is None:
        return f"{printable(source_guid(entry))}: its output or provenance vanished from {output}"
    record = ProvenanceRecord.from_dict(found[0])
    duration = record.output.get("duration_s")
    return ConvertedEpisode(
        source_guid=source_guid(entry), guid=new_guid(source_guid(entry), entry.output),
        url=public_url(base_url, output), length=info.size_bytes,
        mime_type=str(record.output.get("content_type") or info.content_type or "audio/mpeg"),
        duration_s=float(duration) if isinstance(duration, (int, float)) else None, sha256=record.output_sha256)


def converted_episodes(storage: Storage, shards: Sequence[Shard], base_url: str,
                       run_id: str | None = None) -> tuple[list[ConvertedEpisode], list[str]]:
    """The run's succeeded episodes, and one printable line per episode that was not converted."""
    report = reconcile(storage, shards, fetch_records=False, run_id=run_id)
    done: list[ConvertedEpisode] = []
    left_out: list[str] = []
    for result in report.results:
        if result.state is not JobState.SUCCEEDED:
            why = f" ({result.reason}: {result.message})" if result.reason else ""
            left_out.append(printable(f"{source_guid(result.entry)} [{result.where}]: {result.state.value}{why}"))
            continue
        made = _converted(storage, result.entry, base_url)
        (left_out if isinstance(made, str) else done).append(made)  # type: ignore[arg-type]
    return done, left_out
