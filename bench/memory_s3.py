"""Just enough of a boto3 S3 client for ``pipeline.storage.Storage`` to list and read, answered from memory.

The control-plane benchmark runs the reconciler on it to measure the reconciler's own cost (parsing, listing logic,
classification, its thread pool) with S3's latency taken out: what is left when S3 answers instantly.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

PAGE_KEYS = 1000
_MODIFIED = datetime(2026, 1, 1, tzinfo=timezone.utc)


class MemoryS3:
    """``list_objects_v2`` (through ``get_paginator``) and ``get_object`` over fixed contents."""

    def __init__(self, bucket: str, objects: Iterable[tuple[str, bytes]], *, max_pool_connections: int = 10) -> None:
        self._bucket = bucket
        self._objects = dict(objects)
        self._keys = sorted(self._objects)
        self.meta = SimpleNamespace(config=SimpleNamespace(max_pool_connections=max_pool_connections))
        self.list_pages = 0

    def get_paginator(self, operation: str) -> MemoryS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, *, Bucket: str, Prefix: str = "", **_: Any) -> Iterator[dict[str, Any]]:  # noqa: N803
        keys = self._keys if Bucket == self._bucket else []
        start = bisect.bisect_left(keys, Prefix)
        end = bisect.bisect_left(keys, Prefix + "\U0010ffff")
        for page_start in range(start, max(start + 1, end), PAGE_KEYS):
            self.list_pages += 1
            chunk = keys[page_start:min(end, page_start + PAGE_KEYS)]
            yield {"Contents": [{"Key": key, "Size": len(self._objects[key]), "ETag": '"0"', "LastModified": _MODIFIED}
                                for key in chunk]}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        body = self._objects.get(Key) if Bucket == self._bucket else None
        if body is None:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "not found"},
                               "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
        return {"Body": io.BytesIO(body), "ETag": '"0"', "ContentLength": len(body)}
