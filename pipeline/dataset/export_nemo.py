"""The ``nemo`` export: one JSONL manifest, ``manifest.jsonl``, with the audio beside it under ``audio/``.

Each line is NeMo's audio-to-audio shape, ``input_filepath`` (the source), ``target_filepath`` (the converted clip)
and ``duration`` (the source's seconds), followed by the row's metadata. Paths are relative to the manifest, the
way NeMo resolves them, so the folder can be moved or synced whole. An append adds lines at the end of the
manifest and files under ``audio/``; nothing already written is rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from pipeline.dataset.rows import ExportRow
from pipeline.dataset.sink import Sink

__all__ = ["MANIFEST", "NemoWriter"]

MANIFEST = "manifest.jsonl"


class NemoWriter:
    """The manifest, streamed line by line; on append it starts from the manifest already written."""

    def __init__(self, sink: Sink, *, first_shard: int = 0) -> None:
        self._sink = sink
        self._staged: Path = sink.stage(MANIFEST)
        appending = bool(first_shard) and sink.fetch(MANIFEST, self._staged)  # the lines already exported, copied
        self._out: IO[str] = self._staged.open("a" if appending else "w", encoding="utf-8")
        self.written: list[str] = []

    def add(self, row: ExportRow) -> None:
        source, target = f"audio/{row.key}.src.{row.source_ext}", f"audio/{row.key}.tgt.{row.converted_ext}"
        for name, data in ((source, row.source), (target, row.converted)):
            staged = self._sink.stage(name)
            staged.write_bytes(data)
            self._sink.commit(name, staged)
        line: dict[str, Any] = {"input_filepath": source, "target_filepath": target,
                                "duration": row.meta.get("input_duration_s"),
                                "target_duration": row.meta.get("output_duration_s"), **row.meta}
        self._out.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> list[str]:
        self._out.close()
        self._sink.commit(MANIFEST, self._staged)
        self.written.append(MANIFEST)
        return self.written
