"""The ``hf`` export: Parquet shards a Hugging Face ``datasets`` user loads as they are, two ``Audio`` columns each.

``datasets`` reads a column's feature type from the Parquet schema's ``huggingface`` metadata
(``{"info": {"features": {...}}}``, what ``Features.arrow_schema`` writes); an ``Audio`` column is stored as a
``struct<bytes: binary, path: string>``, the bytes of a whole file and a name whose extension tells the decoder the
container. Writing that metadata ourselves keeps ``datasets`` (and its dependencies) out of the runtime; the tests
load every export with the real library. ``metadata`` and ``voice_settings`` are free objects, stored as JSON text
so every shard has the same schema.

Rows are buffered a few at a time and written as row groups, and a shard is closed before it would pass
``MAX_SHARD_BYTES``, so memory holds one buffer, never the shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset.rows import ExportRow
from pipeline.dataset.sink import Sink

__all__ = ["HF_FEATURES", "MAX_SHARD_BYTES", "SCHEMA", "HfWriter"]

MAX_SHARD_BYTES = 500 * 1000 * 1000
#: a row group is written when the buffer holds this many rows or bytes of audio
GROUP_ROWS = 64
GROUP_BYTES = 32 * 1024 * 1024
SHARD_NAME = "data/train-{:05d}.parquet"

_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
#: (column, Arrow type, the ``datasets`` dtype of a Value; None for Audio and lists)
_COLUMNS: list[tuple[str, pa.DataType, str | None]] = [
    ("key", pa.string(), "string"), ("source_audio", _AUDIO, None), ("converted_audio", _AUDIO, None),
    ("voice_id", pa.string(), "string"), ("model_id", pa.string(), "string"), ("seed", pa.int64(), "int64"),
    ("voice_settings", pa.string(), "string"), ("output_format", pa.string(), "string"),
    ("input_duration_s", pa.float64(), "float64"), ("output_duration_s", pa.float64(), "float64"),
    ("input_sample_rate", pa.int64(), "int64"), ("output_sample_rate", pa.int64(), "int64"),
    ("loudness_lufs", pa.float64(), "float64"), ("request_ids", pa.list_(pa.string()), None),
    ("credits", pa.float64(), "float64"), ("input_sha256", pa.string(), "string"),
    ("output_sha256", pa.string(), "string"), ("id", pa.string(), "string"), ("metadata", pa.string(), "string"),
    ("input_uri", pa.string(), "string"), ("output_uri", pa.string(), "string"), ("job_id", pa.string(), "string"),
    ("run_id", pa.string(), "string"), ("shard", pa.string(), "string"), ("line", pa.int64(), "int64"),
]


def _feature(name: str, dtype: str | None) -> dict[str, Any]:
    if name.endswith("_audio"):
        return {"_type": "Audio"}
    if dtype is None:  # request_ids
        return {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}
    return {"dtype": dtype, "_type": "Value"}


#: dictionary encoding and statistics for the small columns only: audio bytes are all different (a dictionary of
#: them only costs), and min/max statistics of audio would copy whole files into every row group's footer
_DICTIONARY = [name for name, _, _ in _COLUMNS if not name.endswith("_audio")]
HF_FEATURES: dict[str, Any] = {name: _feature(name, dtype) for name, _, dtype in _COLUMNS}
SCHEMA = pa.schema([(name, kind) for name, kind, _ in _COLUMNS]).with_metadata(
    {"huggingface": json.dumps({"info": {"features": HF_FEATURES}})})


def _record(row: ExportRow) -> dict[str, Any]:
    meta = row.meta
    values = {name: meta.get(name) for name, _, _ in _COLUMNS}
    values["source_audio"] = {"bytes": row.source, "path": f"{row.key}.src.{row.source_ext}"}
    values["converted_audio"] = {"bytes": row.converted, "path": f"{row.key}.tgt.{row.converted_ext}"}
    for name in ("metadata", "voice_settings"):
        values[name] = None if meta.get(name) is None else json.dumps(meta[name], ensure_ascii=False, sort_keys=True)
    for name in ("input_sample_rate", "output_sample_rate", "seed", "line"):
        values[name] = None if meta.get(name) is None else int(meta[name])
    return values


class HfWriter:
    """Parquet shards numbered from ``first_shard`` (an append continues after the shards already there)."""

    def __init__(self, sink: Sink, *, first_shard: int = 0, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
        self._sink, self._index, self._max = sink, first_shard, max_shard_bytes
        self._buffer: list[dict[str, Any]] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._staged: Path | None = None
        self._shard_bytes = 0
        self.written: list[str] = []

    def add(self, row: ExportRow) -> None:
        size = len(row.source) + len(row.converted)
        if (self._writer is not None or self._buffer) and self._shard_bytes + self._buffered + size > self._max:
            self._flush()
            self._close_shard()
        self._buffer.append(_record(row))
        self._buffered += size
        if len(self._buffer) >= GROUP_ROWS or self._buffered >= GROUP_BYTES:
            self._flush()

    def close(self) -> list[str]:
        self._flush()
        self._close_shard()
        return self.written

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._staged = self._sink.stage(SHARD_NAME.format(self._index))
            self._writer = pq.ParquetWriter(self._staged, SCHEMA, use_dictionary=_DICTIONARY,
                                            write_statistics=_DICTIONARY)
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=SCHEMA))
        self._shard_bytes += self._buffered
        self._buffer, self._buffered = [], 0

    def _close_shard(self) -> None:
        if self._writer is None or self._staged is None:
            return
        self._writer.close()
        name = SHARD_NAME.format(self._index)
        self._sink.commit(name, self._staged)
        self.written.append(name)
        self._writer, self._staged, self._shard_bytes = None, None, 0
        self._index += 1
