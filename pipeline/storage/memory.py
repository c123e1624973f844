"""An S3 in memory, shaped like the part of a boto3 client that ``Storage`` uses, conditional writes included.

``Storage(MemoryS3())`` runs the real ``Storage`` code (its error translation, its commit marker) with S3's latency
and the network taken out: fast unit tests of commit, scans, plan, retry and reconcile, and the control-plane
benchmark's "S3 answers instantly" arm. The integration lane runs the same cases against moto's server over HTTP.

What it imitates: buckets (``NoSuchBucket``), ``head_object``/``get_object`` (404 ``NoSuchKey``; ``Range`` reads),
``put_object`` with ``IfNoneMatch="*"`` and ``IfMatch`` (412 ``PreconditionFailed``), user metadata, ETags that change
with the content, ``delete_object``, and ``list_objects_v2`` pages in key order.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

from pipeline.storage.s3 import Storage

__all__ = ["MemoryS3", "memory_storage"]

PAGE_KEYS = 1000


@dataclass
class _Object:
    body: bytes
    content_type: str = "binary/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def etag(self) -> str:
        return hashlib.md5(self.body, usedforsecurity=False).hexdigest()


class _Body(io.BytesIO):
    def iter_chunks(self, chunk_size: int = 1024) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk


def _error(code: str, status: int, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


class MemoryS3:
    """Buckets of objects in a dict, behind a lock; ``requests`` counts calls by operation."""

    def __init__(self, *, max_pool_connections: int = 10) -> None:
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._sorted: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.meta = SimpleNamespace(config=SimpleNamespace(max_pool_connections=max_pool_connections))
        self.requests: dict[str, int] = {}

    def seed(self, bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
        """Fill a bucket in one go (made if needed), e.g. with a synthetic run's records."""
        with self._lock:
            stored = self._buckets.setdefault(bucket, {})
            stored.update((key, _Object(body)) for key, body in objects)
            self._sorted[bucket] = sorted(stored)

    def _count(self, operation: str) -> None:
        self.requests[operation] = self.requests.get(operation, 0) + 1

    def _bucket(self, name: str, operation: str) -> dict[str, _Object]:
        if name not in self._buckets:
            raise _error("NoSuchBucket", 404, operation)
        return self._buckets[name]

    def create_bucket(self, *, Bucket: str, **_: Any) -> dict[str, Any]:  # noqa: N803  (boto3's names)
        with self._lock:
            self._count("CreateBucket")
            self._buckets.setdefault(Bucket, {})
            self._sorted.setdefault(Bucket, [])
        return {}

    def head_bucket(self, *, Bucket: str) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._count("HeadBucket")
            self._bucket(Bucket, "HeadBucket")
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._count("HeadObject")
            found = self._bucket(Bucket, "HeadObject").get(Key)
            if found is None:
                raise _error("404", 404, "HeadObject")
            return {"ContentLength": len(found.body), "ETag": f'"{found.etag}"', "LastModified": found.modified,
                    "ContentType": found.content_type, "Metadata": dict(found.metadata)}

    def get_object(self, *, Bucket: str, Key: str, Range: str | None = None) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._count("GetObject")
            found = self._bucket(Bucket, "GetObject").get(Key)
            if found is None:
                raise _error("NoSuchKey", 404, "GetObject")
            body = found.body
            if Range is not None:  # "bytes=START-END", END inclusive and clipped to the object, as S3 answers
                first, _, last = Range.removeprefix("bytes=").partition("-")
                if int(first) >= len(body):
                    raise _error("InvalidRange", 416, "GetObject")
                body = body[int(first):int(last) + 1 if last else None]
            return {"Body": _Body(body), "ContentLength": len(body), "ETag": f'"{found.etag}"',
                    "LastModified": found.modified, "ContentType": found.content_type,
                    "Metadata": dict(found.metadata)}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes | Any = b"",  # noqa: N803
                   ContentType: str = "binary/octet-stream", Metadata: dict[str, str] | None = None,
                   IfNoneMatch: str | None = None, IfMatch: str | None = None, **_: Any) -> dict[str, Any]:
        data = Body if isinstance(Body, bytes) else Body.read()
        with self._lock:
            self._count("PutObject")
            stored = self._bucket(Bucket, "PutObject")
            existing = stored.get(Key)
            if IfNoneMatch == "*" and existing is not None:
                raise _error("PreconditionFailed", 412, "PutObject")
            if IfMatch is not None and (existing is None or f'"{existing.etag}"' != IfMatch):
                raise _error("PreconditionFailed", 412, "PutObject")
            obj = _Object(data, ContentType, dict(Metadata or {}))
            if Key not in stored:
                bisect.insort(self._sorted[Bucket], Key)
            stored[Key] = obj
            return {"ETag": f'"{obj.etag}"'}

    def delete_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self._count("DeleteObject")
            stored = self._bucket(Bucket, "DeleteObject")
            if stored.pop(Key, None) is not None:
                self._sorted[Bucket].remove(Key)
        return {}

    def get_paginator(self, operation: str) -> MemoryS3:
        if operation != "list_objects_v2":
            raise NotImplementedError(operation)
        return self

    def paginate(self, *, Bucket: str, Prefix: str = "", **_: Any) -> Iterator[dict[str, Any]]:  # noqa: N803
        with self._lock:
            self._bucket(Bucket, "ListObjectsV2")
            keys = self._sorted[Bucket]
            start = bisect.bisect_left(keys, Prefix)
            end = bisect.bisect_left(keys, Prefix + "\U0010ffff")
            chosen = keys[start:end]
            objects = self._buckets[Bucket]
            pages = [[{"Key": key, "Size": len(objects[key].body), "ETag": f'"{objects[key].etag}"',
                       "LastModified": objects[key].modified} for key in chosen[i:i + PAGE_KEYS]]
                     for i in range(0, max(len(chosen), 1), PAGE_KEYS)]
        for page in pages:
            self._count("ListObjectsV2")
            yield {"Contents": page} if page else {}


def memory_storage(*buckets: str) -> Storage:
    """A ``Storage`` over a fresh ``MemoryS3`` holding these (empty) buckets."""
    client = MemoryS3()
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    return Storage(client)
