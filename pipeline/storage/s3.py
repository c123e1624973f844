"""S3 access: streamed downloads and uploads, JSON records with conditional puts, paged listings.

Errors come back as the pipeline's own: a missing object or bucket is an ``InputError`` for inputs (the caller says
which), an unreachable endpoint or a 5xx is a ``StorageUnavailableError`` (transient).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from pipeline.config import Settings
from pipeline.errors import ConditionFailed, InputError, PipelineError, StorageUnavailableError
from pipeline.s3uri import S3Uri

CHUNK_BYTES = 1024 * 1024
SHA256_META = "sha256"  # user metadata key under which uploads record their content hash
#: how long a bucket seen to exist is taken to exist without another HEAD (``Storage.bucket_exists``)
BUCKET_SEEN_S = 300.0


@dataclass(frozen=True)
class ObjectInfo:
    uri: S3Uri
    size_bytes: int
    etag: str
    last_modified: datetime | None = None
    content_type: str | None = None
    sha256: str | None = None  # from our own upload metadata, when present


def _too_large(uri: S3Uri, size: int, max_bytes: int) -> InputError:
    return InputError(f"input {uri} is {size} bytes, over STS_MAX_INPUT_BYTES={max_bytes}", reason="too_large")


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Storage:
    """A thin, typed layer over one boto3 S3 client."""

    def __init__(self, client: Any) -> None:
        self._s3 = client
        self._buckets_seen: dict[str, float] = {}  # bucket -> when it was last seen to exist (monotonic)

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        config = Config(
            connect_timeout=5, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=128,  # a threads worker's jobs (worker --pool threads -c 50) share this client
            s3={"addressing_style": "path"},
        )
        client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region, config=config
        )
        return cls(client)

    @property
    def client(self) -> Any:
        return self._s3

    # --- reading
    def head(self, uri: S3Uri) -> ObjectInfo | None:
        """The object's size, ETag and type, or None if it does not exist."""
        try:
            response = self._s3.head_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as error:
            if _status(error) == 404:
                if _code(error) == "NoSuchBucket":
                    raise InputError(f"bucket {uri.bucket!r} does not exist", reason="missing_bucket") from None
                return None
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer for {uri}: {type(error).__name__}") from None
        return ObjectInfo(
            uri, int(response["ContentLength"]), str(response.get("ETag", "")).strip('"'),
            response.get("LastModified"), response.get("ContentType"),
            (response.get("Metadata") or {}).get(SHA256_META),
        )

    def require(self, uri: S3Uri, *, role: str = "input") -> ObjectInfo:
        """HEAD an object that must exist; a missing one is an InputError naming it."""
        info = self.head(uri)
        if info is None:
            if not self.bucket_exists(uri.bucket):
                raise InputError(f"bucket {uri.bucket!r} of {role} {uri} does not exist", reason="missing_bucket")
            raise InputError(f"{role} {uri} does not exist: check the manifest line's URI", reason=f"missing_{role}")
        return info

    def bucket_exists(self, bucket: str) -> bool:
        """True if the bucket exists (and we may see it); HEAD of an object cannot tell a missing bucket apart.

        A bucket seen to exist is not asked about again for ``BUCKET_SEEN_S`` (a worker's jobs share one output
        bucket: one HEAD for them, not one each); a missing one is asked about every time.
        """
        seen = self._buckets_seen.get(bucket)
        if seen is not None and time.monotonic() - seen < BUCKET_SEEN_S:
            return True
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if _status(error) in (403, 404):
                return False
            raise self._translate(error, S3Uri(bucket, "")) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer for bucket {bucket!r}: {type(error).__name__}") from None
        self._buckets_seen[bucket] = time.monotonic()
        return True

    def download(self, uri: S3Uri, dest: Path, *, max_bytes: int | None = None) -> tuple[ObjectInfo, str]:
        """Stream the object to ``dest``; return its info and the SHA-256 of what was written.

        With ``max_bytes``, an object over it is ``InputError(too_large)``: refused on the GET's Content-Length before
        a byte is read, and again should the body run past it (one GET, no HEAD before it).
        """
        try:
            response = self._s3.get_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                raise InputError(f"input {uri} does not exist: check the manifest line's URI",
                                 reason="missing_input") from None
            if _code(error) == "NoSuchBucket":
                raise InputError(f"bucket {uri.bucket!r} of input {uri} does not exist",
                                 reason="missing_bucket") from None
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer for {uri}: {type(error).__name__}") from None
        body, size = response["Body"], int(response["ContentLength"])
        if max_bytes is not None and size > max_bytes:
            body.close()
            raise _too_large(uri, size, max_bytes)
        digest, written = hashlib.sha256(), 0
        try:
            with open(dest, "wb") as out:
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        body.close()
                        raise _too_large(uri, written, max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except (BotoCoreError, OSError) as error:
            raise StorageUnavailableError(f"download of {uri} broke off: {type(error).__name__}") from None
        info = ObjectInfo(uri, size, str(response.get("ETag", "")).strip('"'),
                          response.get("LastModified"), response.get("ContentType"))
        return info, digest.hexdigest()

    def get_json(self, uri: S3Uri) -> tuple[dict[str, Any], str] | None:
        """The JSON object and its ETag, or None if it does not exist."""
        try:
            response = self._s3.get_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                return None
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer for {uri}: {type(error).__name__}") from None
        return json.loads(response["Body"].read()), str(response.get("ETag", "")).strip('"')

    def get_bytes(self, uri: S3Uri) -> bytes:
        try:
            return bytes(self._s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                raise InputError(f"{uri} does not exist", reason="missing_object") from None
            raise self._translate(error, uri) from None

    def get_range(self, uri: S3Uri, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (both inclusive, as HTTP ranges count) of an object; fewer past its end."""
        if start < 0 or end < start:
            raise ValueError(f"not a byte range: {start}-{end}")
        try:
            response = self._s3.get_object(Bucket=uri.bucket, Key=uri.key, Range=f"bytes={start}-{end}")
            return bytes(response["Body"].read())
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                raise InputError(f"{uri} does not exist", reason="missing_input") from None
            if _code(error) == "InvalidRange":  # start is past the end of the object
                return b""
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer for {uri}: {type(error).__name__}") from None

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the prefix, a page (1,000 keys) per request."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
                for item in page.get("Contents", []):
                    yield ObjectInfo(S3Uri(bucket, item["Key"]), int(item["Size"]),
                                     str(item.get("ETag", "")).strip('"'), item.get("LastModified"))
        except ClientError as error:
            if _code(error) == "NoSuchBucket":
                return
            raise self._translate(error, S3Uri(bucket, prefix)) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer listing s3://{bucket}/{prefix}: "
                                          f"{type(error).__name__}") from None

    # --- writing
    def upload_file(self, path: Path, uri: S3Uri, *, content_type: str, sha256: str) -> str:
        """Upload a file with one PUT (outputs are far below S3's 5 GB single-PUT limit); return the ETag."""
        with open(path, "rb") as body:
            response = self._put(uri, Body=body, ContentType=content_type, Metadata={SHA256_META: sha256})
        return str(response.get("ETag", "")).strip('"')

    def put_bytes(self, uri: S3Uri, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self._put(uri, Body=data, ContentType=content_type)

    def put_json(self, uri: S3Uri, record: dict[str, Any], *, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        """Write a JSON record. With ``if_none_match`` it is a commit marker: ``ConditionFailed`` if it exists."""
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = f'"{if_match}"'
        body = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
        response = self._put(uri, Body=body, ContentType="application/json", **extra)
        return str(response.get("ETag", "")).strip('"')

    def delete(self, uri: S3Uri) -> None:
        try:
            self._s3.delete_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as error:
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer deleting {uri}: {type(error).__name__}") from None

    def ensure_bucket(self, bucket: str) -> None:
        if not self.bucket_exists(bucket):
            self._s3.create_bucket(Bucket=bucket)

    def _put(self, uri: S3Uri, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(self._s3.put_object(Bucket=uri.bucket, Key=uri.key, **kwargs))
        except ClientError as error:
            if _status(error) == 412 or _code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ConditionFailed(f"{uri} already exists or changed (conditional write refused)") from None
            if _code(error) == "NoSuchBucket":
                raise InputError(f"output bucket {uri.bucket!r} does not exist", reason="missing_bucket") from None
            raise self._translate(error, uri) from None
        except (BotoCoreError, EndpointConnectionError) as error:
            raise StorageUnavailableError(f"S3 did not answer writing {uri}: {type(error).__name__}") from None

    @staticmethod
    def _translate(error: ClientError, uri: S3Uri) -> PipelineError:
        status, code = _status(error), _code(error)
        if status >= 500 or status in (408, 429) or code in ("SlowDown", "RequestTimeout"):
            return StorageUnavailableError(f"S3 answered {status} {code} for {uri}", status=status)
        if status in (401, 403):
            return InputError(f"S3 refused access to {uri} ({code}): check the credentials and bucket policy",
                              reason="s3_access_denied")
        return InputError(f"S3 answered {status} {code} for {uri}", reason="s3_error")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
