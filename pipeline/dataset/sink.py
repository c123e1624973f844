"""Where an export goes: a local directory, or an S3 prefix (each file is made locally, then uploaded once whole).

Writers make every file in a local staging path and ``commit`` it when it is complete: in a directory that is an
atomic rename, so a reader never sees half a shard; on S3 it is one upload, after which the local copy is deleted,
so the disk holds at most the file being written.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage, sha256_file

__all__ = ["Sink", "open_sink"]


class Sink:
    """A destination of named files (``a/b.tar``): staged locally, committed whole."""

    def __init__(self, root: Path | None = None, *, storage: Storage | None = None, prefix: S3Uri | None = None):
        self._root = root
        self._storage = storage
        self._prefix = prefix
        self._staging = Path(tempfile.mkdtemp(prefix="sts-export-")) if prefix is not None else None

    def __str__(self) -> str:
        return str(self._prefix) if self._prefix is not None else str(self._root)

    def stage(self, name: str) -> Path:
        """A local path to write ``name`` to before ``commit``."""
        base = self._staging if self._staging is not None else self._root
        assert base is not None
        path = base / f"{name}.partial"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, name: str, staged: Path) -> None:
        if self._prefix is None or self._storage is None:
            assert self._root is not None
            os.replace(staged, self._root / name)
            return
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._storage.upload_file(staged, self._uri(name), content_type=content_type, sha256=sha256_file(staged))
        staged.unlink()

    def write_text(self, name: str, text: str) -> None:
        staged = self.stage(name)
        staged.write_text(text, encoding="utf-8")
        self.commit(name, staged)

    def read_text(self, name: str) -> str | None:
        """The file's text, or ``None`` when the export has no such file."""
        if self._prefix is None or self._storage is None:
            assert self._root is not None
            path = self._root / name
            return path.read_text(encoding="utf-8") if path.exists() else None
        if self._storage.head(self._uri(name)) is None:
            return None
        return self._storage.get_bytes(self._uri(name)).decode("utf-8")

    def fetch(self, name: str, dest: Path) -> bool:
        """Copy the file to ``dest`` (streamed, never held whole); ``False`` when the export has no such file."""
        if self._prefix is None or self._storage is None:
            assert self._root is not None
            if not (self._root / name).exists():
                return False
            shutil.copyfile(self._root / name, dest)
            return True
        if self._storage.head(self._uri(name)) is None:
            return False
        self._storage.download(self._uri(name), dest)
        return True

    def close(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _uri(self, name: str) -> S3Uri:
        key = "/".join(part for part in (self._prefix.key.strip("/") if self._prefix else "", name) if part)
        assert self._prefix is not None
        return S3Uri(self._prefix.bucket, key)


def open_sink(target: str, storage: Storage | None) -> Sink:
    """The sink for ``--to``: ``s3://bucket/prefix`` (needs ``storage``) or a directory, made if missing."""
    if target.startswith("s3://"):
        if storage is None:
            raise ValueError("an s3:// destination needs S3")
        parsed = S3Uri.parse(target.rstrip("/"), require_key=False)
        return Sink(storage=storage, prefix=parsed)
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    return Sink(root)
