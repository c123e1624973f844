"""``s3://bucket/key`` URIs, checked the way S3 and a careful user would want."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, *, require_key: bool = True) -> S3Uri:
        """Parse and check an S3 URI; raise ``ValueError`` with a message a user can act on."""
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ValueError(f"must be an s3://bucket/key URI, got {uri!r}"[:200])
        rest = uri[len("s3://"):]
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(f"{bucket[:80]!r} is not a valid bucket name: 3-63 lowercase letters, digits, '.' or '-', "
                             "starting and ending with a letter or digit")
        if require_key and not key:
            raise ValueError("names a bucket but no object key")
        if key:
            cls._check_key(key)
        return cls(bucket, key)

    @staticmethod
    def _check_key(key: str) -> None:
        if len(key.encode()) > 1024:
            raise ValueError("object key is longer than S3's 1024 bytes")
        if key.startswith("/"):
            raise ValueError("object key must not start with '/' (absolute path)")
        parts = key.split("/")
        if any(part in (".", "..") for part in parts):
            raise ValueError("object key must not contain '.' or '..' path segments")
        if "//" in key:
            raise ValueError("object key must not contain empty path segments ('//')")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
            raise ValueError("object key must not contain control characters")

    def child(self, suffix: str) -> S3Uri:
        return S3Uri(self.bucket, self.key + suffix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"
