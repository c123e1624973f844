"""A run's succeeded jobs as dataset rows: the metadata from each provenance record, and both audio files.

From S3 alone, like reconcile: the run's stored manifests say which jobs there are, a listing scan says which
committed, and each committed job's provenance record is the row's metadata. Rows come out in manifest order, fetched
a few at a time by a small thread pool (a sliding window), so memory holds a window of rows however large the run.

Headerless audio (a ``.pcm``/``.raw`` input, a ``pcm_*``/``ulaw_8000``/``alaw_8000`` output stored as the API sent
it) is wrapped as WAV here, so every loader can decode every row. A converted file whose SHA-256 is not the one its
record names is left out and counted: the row would pair metadata with audio it does not describe.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.audio.container import wrap_wav
from pipeline.errors import PipelineError
from pipeline.formats import OUTPUT_FORMATS, OutputFormat
from pipeline.manifest.load import ManifestEntry, Shard
from pipeline.s3uri import S3Uri
from pipeline.storage.records import ProvenanceRecord, provenance_uri
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs

__all__ = ["ExportRow", "RowStats", "succeeded_rows"]

#: rows fetched ahead of the writer; the window bounds memory at this many rows' audio
WINDOW = 16
FETCH_THREADS = 8
#: raw inputs are the API's pcm_s16le_16: 16 kHz mono signed 16-bit
_RAW_INPUT = OUTPUT_FORMATS["pcm_16000"]


@dataclass(frozen=True)
class ExportRow:
    """One succeeded job: its metadata (JSON-ready, the same in every format) and both audio files."""

    key: str  # the job id: unique in the run, stable across nights, and free of dots (WebDataset splits at them)
    meta: dict[str, Any]
    source: bytes
    source_ext: str
    converted: bytes
    converted_ext: str

    @property
    def voice_id(self) -> str:
        return str(self.meta.get("voice_id") or "")


@dataclass
class RowStats:
    """What was left out of the export, and why (each a count; ``mismatched`` lists ``output: why``)."""

    not_succeeded: int = 0
    skipped: int = 0  # jobs of an earlier export (``--since``/``--append``)
    mismatched: list[str] = field(default_factory=list)


def succeeded_rows(storage: Storage, shards: Sequence[Shard], stats: RowStats, *,
                   skip_ids: Collection[str] = frozenset()) -> Iterator[ExportRow]:
    """Every committed job of ``shards`` not in ``skip_ids``, as a row with its audio, in manifest order."""
    entries = [entry for shard in shards for entry in shard.entries]
    presence = scan_outputs(storage, (entry.output for entry in entries))
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        pending: deque[Future[ExportRow | None]] = deque()
        for entry in entries:
            if entry.job_id in skip_ids:
                stats.skipped += 1
            elif not presence[entry.output].provenance:
                stats.not_succeeded += 1
            else:
                pending.append(pool.submit(_fetch, storage, entry, stats))
                if len(pending) >= WINDOW:
                    yield from _ready(pending.popleft())
        while pending:
            yield from _ready(pending.popleft())


def _ready(future: Future[ExportRow | None]) -> Iterator[ExportRow]:
    row = future.result()
    if row is not None:
        yield row


def _fetch(storage: Storage, entry: ManifestEntry, stats: RowStats) -> ExportRow | None:
    """The row of one committed job, or ``None`` (counted) when its record or audio cannot be used."""
    output = S3Uri.parse(entry.output)
    try:
        found = storage.get_json(provenance_uri(output))
        if found is None:
            stats.not_succeeded += 1
            return None
        record = ProvenanceRecord.from_dict(found[0])
        converted = storage.get_bytes(output)
        source = storage.get_bytes(S3Uri.parse(entry.job.input))
    except (PipelineError, ValueError) as error:
        stats.mismatched.append(f"{entry.output}: {error}")
        return None
    if record.output_sha256 and hashlib.sha256(converted).hexdigest() != record.output_sha256:
        stats.mismatched.append(f"{entry.output}: its SHA-256 is not the one its provenance record names "
                                "(replaced after the job committed?)")
        return None
    source, source_ext = _playable(source, entry.job.input, _RAW_INPUT)
    fmt = OUTPUT_FORMATS.get(str(record.output.get("output_format") or entry.job.output_format))
    converted, converted_ext = _playable(converted, entry.output, fmt, wrapped=record.output.get("container"))
    return ExportRow(entry.job_id, row_meta(entry, record), source, source_ext, converted, converted_ext)


def _playable(data: bytes, uri: str, fmt: OutputFormat | None, *, wrapped: Any = None) -> tuple[bytes, str]:
    """The audio as a loader can open it, and its extension: headerless samples behind a WAV header."""
    suffix = PurePosixPath(S3Uri.parse(uri).key).suffix.lower().lstrip(".")
    headerless = suffix in ("pcm", "raw") if fmt is _RAW_INPUT else bool(fmt and fmt.headerless and not wrapped
                                                                          and suffix != "wav")
    if not headerless or fmt is None:
        return data, suffix or "bin"
    with tempfile.TemporaryDirectory(prefix="sts-export-") as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out.wav"
        raw.write_bytes(data)
        return wrap_wav(raw, out, fmt).read_bytes(), "wav"


def row_meta(entry: ManifestEntry, record: ProvenanceRecord) -> dict[str, Any]:
    """A row's metadata: the request, durations, loudness, request ids, credits, hashes, the manifest's id and
    metadata. Request fields come from the record (what was sent), falling back to the manifest line."""
    found = record.request.get("params")
    params: dict[str, Any] = found if isinstance(found, dict) else {}
    job = entry.job
    fmt = OUTPUT_FORMATS.get(str(params.get("output_format") or job.output_format))
    return {
        "key": entry.job_id, "job_id": entry.job_id, "run_id": record.identity.run_id, "shard": entry.shard,
        "line": entry.line, "id": job.id, "metadata": job.metadata,
        "voice_id": params.get("voice_id", job.voice_id), "model_id": params.get("model_id", job.model_id),
        "seed": params.get("seed", job.seed),
        "voice_settings": params.get("voice_settings", job.request_params()["voice_settings"]),
        "output_format": fmt.name if fmt else job.output_format,
        "input_uri": job.input, "output_uri": entry.output,
        "input_sha256": record.input.get("sha256"), "output_sha256": record.output_sha256,
        "input_duration_s": _number(record.input.get("duration_s")),
        "output_duration_s": _number(record.output.get("duration_s")),
        "input_sample_rate": _number(record.input.get("sample_rate")),
        "output_sample_rate": fmt.sample_rate if fmt else None,
        "loudness_lufs": _number(record.quality.get("lufs")),
        "request_ids": list(record.request_ids), "credits": record.cost.credits,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
