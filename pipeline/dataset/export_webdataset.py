"""The ``webdataset`` export: tar shards of about 1 GB, each sample ``{key}.src.{ext}``, ``{key}.tgt.{ext}`` and
``{key}.json``, written in that order (WebDataset groups a sample's files by the key before the first dot, and job
ids have none).

A tar is a stream: each row is appended as it comes and the shard is closed at the size, so memory holds one row.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from pipeline.dataset.rows import ExportRow
from pipeline.dataset.sink import Sink

__all__ = ["MAX_SHARD_BYTES", "WebDatasetWriter"]

MAX_SHARD_BYTES = 1000 * 1000 * 1000
SHARD_NAME = "shard-{:05d}.tar"
#: members carry a fixed time, so the same rows give byte-identical shards
_MTIME = 0


class WebDatasetWriter:
    """Tar shards numbered from ``first_shard``."""

    def __init__(self, sink: Sink, *, first_shard: int = 0, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
        self._sink, self._index, self._max = sink, first_shard, max_shard_bytes
        self._tar: tarfile.TarFile | None = None
        self._staged: Path | None = None
        self._bytes = 0
        self.written: list[str] = []

    def add(self, row: ExportRow) -> None:
        meta = json.dumps(row.meta, ensure_ascii=False, sort_keys=True).encode()
        size = len(row.source) + len(row.converted) + len(meta)
        if self._tar is not None and self._bytes + size > self._max:
            self._close_shard()
        if self._tar is None:
            self._staged = self._sink.stage(SHARD_NAME.format(self._index))
            self._tar = tarfile.open(self._staged, "w", format=tarfile.USTAR_FORMAT)
        for name, data in ((f"{row.key}.src.{row.source_ext}", row.source),
                           (f"{row.key}.tgt.{row.converted_ext}", row.converted), (f"{row.key}.json", meta)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._bytes += size

    def close(self) -> list[str]:
        self._close_shard()
        return self.written

    def _close_shard(self) -> None:
        if self._tar is None or self._staged is None:
            return
        self._tar.close()
        name = SHARD_NAME.format(self._index)
        self._sink.commit(name, self._staged)
        self.written.append(name)
        self._tar, self._staged, self._bytes = None, None, 0
        self._index += 1
