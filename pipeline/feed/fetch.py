"""Each enclosure downloaded once, streamed straight into S3, with a size bound, a deadline and progress lines.

The body goes from the HTTP response to a multipart upload without touching the disk; the object appears in S3
only when the upload completes, so a download that breaks off leaves nothing half-written. The object carries the
source's URL, Content-Length and ETag in its metadata: an episode already in S3 whose feed length, or whose source
Content-Length / ETag (one HEAD), matches is not fetched again — a second run over the same feed downloads nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import FeedError, StorageUnavailableError
from pipeline.feed import net
from pipeline.feed.read import AUDIO_EXTENSIONS, Episode
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

PROGRESS_EVERY_BYTES = 8 * 1024 * 1024
META_URL, META_LENGTH, META_ETAG, META_GUID = "feed-source-url", "feed-source-length", "feed-source-etag", "feed-guid"

Progress = Callable[[str], None]


def _ascii(url: str) -> str:
    """The URL as S3 metadata may hold it (ASCII only)."""
    return quote(url, safe=":/?&=%#@+;,~!$'()*[]")


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 500 * 1024 * 1024
    timeout_s: float = 30.0  # longest silence between two chunks
    deadline_s: float = 3600.0  # the whole download
    policy: net.AddressPolicy = net.AddressPolicy()


#: the bounds a download gets unless the caller sets others
DEFAULT_LIMITS = FetchLimits()


@dataclass(frozen=True)
class Fetched:
    episode: Episode
    uri: S3Uri
    size_bytes: int
    downloaded: bool  # False: it was already in S3


def episode_key(prefix: S3Uri, episode: Episode) -> S3Uri:
    """Where an episode's enclosure is stored: a hash of its GUID (GUIDs are URLs, arbitrary text), its extension."""
    assert episode.enclosure is not None
    suffix = PurePosixPath(urlsplit(episode.enclosure.url).path).suffix.lower()
    if suffix not in AUDIO_EXTENSIONS:
        suffix = next((ext for ext, mime in AUDIO_EXTENSIONS.items() if mime == episode.enclosure.mime_type), ".mp3")
    digest = hashlib.sha256(episode.guid.encode()).hexdigest()[:20]
    return S3Uri(prefix.bucket, f"{prefix.key.rstrip('/')}/{digest}{suffix}".lstrip("/"))


class _BoundedBody:
    """A file-like view of a streamed response for boto3: counts bytes, enforces the bound and the deadline."""

    def __init__(self, response: httpx.Response, limits: FetchLimits, url: str, progress: Progress) -> None:
        self._chunks = response.iter_bytes(1024 * 1024)
        self._buffer = b""
        self._limits, self._url, self._progress = limits, url, progress
        self._expected = int(response.headers.get("content-length") or 0) or None
        self._started = time.monotonic()
        self.size = 0
        self._reported = 0

    def read(self, amount: int = -1) -> bytes:
        while amount < 0 or len(self._buffer) < amount:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._check_complete()
                break
            self._take(chunk)
        if amount < 0:
            amount = len(self._buffer)
        data, self._buffer = self._buffer[:amount], self._buffer[amount:]
        return data

    def _take(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._buffer += chunk
        if self.size > self._limits.max_bytes:
            raise FeedError(f"{self._url!r} is over the size bound of {self._limits.max_bytes} bytes: skipped")
        if time.monotonic() - self._started > self._limits.deadline_s:
            raise FeedError(f"{self._url!r} took longer than {self._limits.deadline_s:.0f} s to download: skipped")
        if self.size - self._reported >= PROGRESS_EVERY_BYTES:
            self._reported = self.size
            whole = f" of {self._expected / 1e6:.1f}" if self._expected else ""
            self._progress(f"  {self.size / 1e6:.1f}{whole} MB")

    def _check_complete(self) -> None:
        if self._expected is not None and self.size != self._expected:
            raise FeedError(f"{self._url!r} broke off after {self.size} of {self._expected} bytes: run again")


def _stored(storage: Storage, uri: S3Uri) -> tuple[int, dict[str, str]] | None:
    """Size and metadata of what is stored at ``uri``, or None."""
    try:
        head = storage.client.head_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as error:
        if int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) == 404:
            return None
        raise FeedError(f"S3 refused HEAD of {uri}: {error.response.get('Error', {}).get('Code')}") from None
    except BotoCoreError as error:
        raise StorageUnavailableError(f"S3 did not answer for {uri}: {type(error).__name__}") from None
    return int(head["ContentLength"]), dict(head.get("Metadata") or {})


def _already_there(storage: Storage, uri: S3Uri, episode: Episode, http: httpx.Client,
                   limits: FetchLimits) -> int | None:
    """The stored size when the stored object is this enclosure, unchanged; None when it must be fetched."""
    stored = _stored(storage, uri)
    if stored is None:
        return None
    size, meta = stored
    assert episode.enclosure is not None
    if meta.get(META_URL) != _ascii(episode.enclosure.url):
        return None
    if episode.enclosure.length and episode.enclosure.length == size:
        return size
    try:
        with net.open_checked(http, episode.enclosure.url, limits.policy, method="HEAD") as response:
            etag = response.headers.get("etag", "")
            length = response.headers.get("content-length", "")
    except FeedError:  # a server that refuses HEAD: fetch it again (the GET is checked the same way)
        return None
    if (etag and _ascii(etag) == meta.get(META_ETAG)) or (length and int(length) == size):
        return size
    return None


def _upload(storage: Storage, uri: S3Uri, body: _BoundedBody, metadata: dict[str, str], mime: str) -> None:
    try:
        storage.client.upload_fileobj(body, uri.bucket, uri.key, ExtraArgs={"ContentType": mime, "Metadata": metadata})
    except ClientError as error:
        raise FeedError(f"S3 refused the upload of {uri}: {error.response.get('Error', {}).get('Code')}") from None
    except BotoCoreError as error:
        raise StorageUnavailableError(f"S3 did not answer uploading {uri}: {type(error).__name__}") from None
    except Exception as error:  # boto3's transfer manager wraps what our reader raised
        cause: Any = error
        while cause is not None and not isinstance(cause, FeedError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or FeedError(f"upload of {uri} failed: {type(error).__name__}")) from None


def _mime(declared: str, uri: S3Uri) -> str:
    if declared.lower().startswith("audio/"):
        return declared
    return AUDIO_EXTENSIONS.get(PurePosixPath(uri.key).suffix, "audio/mpeg")


def fetch_episode(storage: Storage, prefix: S3Uri, episode: Episode, *, limits: FetchLimits = FetchLimits(),
                  progress: Progress = lambda line: None) -> Fetched:
    """Bring one episode's audio enclosure into S3 under ``prefix`` (``FeedError`` when it is refused)."""
    enclosure = episode.enclosure
    if enclosure is None:
        raise FeedError(f"episode {episode.title!r} has no enclosure: skipped")
    if not enclosure.is_audio():
        raise FeedError(f"episode {episode.title!r}: enclosure {enclosure.url!r} is {enclosure.mime_type or 'of no'} "
                        "type, not audio: skipped")
    net.check_url(enclosure.url, limits.policy)
    uri = episode_key(prefix, episode)
    with net.client(timeout_s=limits.timeout_s) as http:
        size = _already_there(storage, uri, episode, http, limits)
        if size is not None:
            progress(f"{episode.title}: already in {uri} ({size} bytes), not fetched again")
            return Fetched(episode, uri, size, downloaded=False)
        progress(f"{episode.title}: downloading {enclosure.url}")
        with net.open_checked(http, enclosure.url, limits.policy) as response:
            served = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if served.startswith(("text/", "application/json", "application/xml", "application/xhtml")):
                raise FeedError(f"episode {episode.title!r}: {enclosure.url!r} served {served}, not audio: skipped")
            body = _BoundedBody(response, limits, enclosure.url, progress)
            metadata = {META_URL: _ascii(enclosure.url), META_LENGTH: response.headers.get("content-length", ""),
                        META_ETAG: _ascii(response.headers.get("etag", "")),
                        META_GUID: hashlib.sha256(episode.guid.encode()).hexdigest()}
            _upload(storage, uri, body, metadata, _mime(enclosure.mime_type, uri))
    progress(f"{episode.title}: stored {uri} ({body.size} bytes)")
    return Fetched(episode, uri, body.size, downloaded=True)
