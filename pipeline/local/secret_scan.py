"""Search everywhere a pipeline run leaves text for secrets: Redis, S3, log files, and given texts.

Used by the secret-scan test and the chaos drill. Every Redis key is read whatever its type (strings, hashes, lists,
sets, sorted sets, streams: Celery's queue lists and kombu's ``unacked`` hash hold the task messages), every object of
every bucket on an S3 endpoint (key, user metadata and body), every file under the given paths.

A secret counts as found in its raw form and in base64 (standard and URL-safe, at each of the three byte alignments):
kombu stores task bodies base64-encoded, so a plain substring search of Redis would miss a secret inside a message.
A ``Hit`` names the secret by its label and says where it was; it never carries the secret itself.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

#: bytes read at a time from S3 objects and files; consecutive reads overlap so a secret across a boundary is found
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Hit:
    """One place a secret was found."""

    secret: str  # the secret's label, never its value
    encoding: str  # raw | base64 | base64url
    where: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.encoding}) in {self.where}"


class SecretScanner:
    """Finds any of ``secrets`` (label -> value) in bytes, in each form a secret may take when stored."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        if not secrets or any(len(value) < 8 for value in secrets.values()):
            raise ValueError("give at least one secret, each at least 8 characters (shorter ones match by chance)")
        self._needles: list[tuple[str, str, bytes]] = []
        self._secrets = dict(secrets)
        for label, value in secrets.items():
            raw = value.encode()
            self._needles.append((label, "raw", raw))
            for encoding, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
                self._needles.extend((label, encoding, needle) for needle in _base64_cores(raw, encode))
        self.overlap = max(len(needle) for _, _, needle in self._needles) - 1

    def find(self, data: bytes, where: str) -> list[Hit]:
        """Hits in ``data`` (one per secret and encoding)."""
        hits: dict[tuple[str, str], Hit] = {}
        for label, encoding, needle in self._needles:
            if (label, encoding) not in hits and needle in data:
                hits[(label, encoding)] = Hit(label, encoding, self._masked(where))
        return list(hits.values())

    def _masked(self, where: str) -> str:
        """``where`` with any secret in it (a Redis key or S3 key named after one) replaced by its label."""
        for label, value in self._secrets.items():
            where = where.replace(value, f"<{label}>")
        return where

    def find_in_stream(self, chunks: Iterable[bytes], where: str) -> list[Hit]:
        """Hits in a stream of chunks, also across chunk boundaries."""
        found: dict[tuple[str, str], Hit] = {}
        tail = b""
        for chunk in chunks:
            window = tail + chunk
            for hit in self.find(window, where):
                found.setdefault((hit.secret, hit.encoding), hit)
            tail = window[-self.overlap:] if self.overlap else b""
        return list(found.values())

    # --- where a run leaves text
    def scan_redis(self, client: redis.Redis) -> list[Hit]:
        """Every key of every database with keys on the server ``client`` is connected to."""
        hits: list[Hit] = []
        pool = client.connection_pool
        for db_name in client.info("keyspace"):
            db = int(str(db_name).removeprefix("db"))
            db_pool = redis.ConnectionPool(connection_class=pool.connection_class,
                                           **{**pool.connection_kwargs, "db": db})
            with redis.Redis(connection_pool=db_pool) as db_client:
                for key in db_client.scan_iter(count=1000):
                    for where, value in _redis_values(db_client, key, db):
                        hits += self.find(value, where)
        return hits

    def scan_s3(self, client: Any) -> list[Hit]:
        """Every version of every object (key, user metadata, body) in every bucket ``client`` (boto3) can list."""
        hits: list[Hit] = []
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
                for item in page.get("Versions", []):
                    version = item.get("VersionId") or "null"
                    where = f"s3://{name}/{item['Key']}" + ("" if version == "null" else f"?versionId={version}")
                    hits += self.find(item["Key"].encode(), f"{where} (key)")
                    extra = {} if version == "null" else {"VersionId": version}
                    response = client.get_object(Bucket=name, Key=item["Key"], **extra)
                    metadata = repr(sorted((response.get("Metadata") or {}).items())).encode()
                    hits += self.find(metadata, f"{where} (metadata)")
                    hits += self.find_in_stream(response["Body"].iter_chunks(CHUNK_BYTES), where)
        return hits

    def scan_paths(self, paths: Iterable[Path]) -> list[Hit]:
        """Every file given, and every file under every directory given."""
        hits: list[Hit] = []
        for path in _files(paths):
            with path.open("rb") as handle:
                hits += self.find_in_stream(iter(lambda: handle.read(CHUNK_BYTES), b""), str(path))
        return hits

    def scan_texts(self, texts: Mapping[str, str]) -> list[Hit]:
        """Given texts (CLI output, exception messages), by name."""
        return [hit for name, text in texts.items() for hit in self.find(text.encode(), name)]


def scan(secrets: Mapping[str, str], *, redis_client: redis.Redis | None = None, s3_client: Any = None,
         paths: Iterable[Path] = (), texts: Mapping[str, str] | None = None) -> list[Hit]:
    """Every hit of ``secrets`` in whichever of Redis, S3, files and texts are given."""
    scanner = SecretScanner(secrets)
    hits = scanner.scan_paths(paths) + scanner.scan_texts(texts or {})
    if redis_client is not None:
        hits += scanner.scan_redis(redis_client)
    if s3_client is not None:
        hits += scanner.scan_s3(s3_client)
    return hits


def _base64_cores(raw: bytes, encode: Any) -> list[bytes]:
    """The part of the base64 text of ``raw`` that does not depend on its neighbours, for each byte alignment.

    Data with ``raw`` at offset ``shift`` (mod 3) encodes to text containing ``core``: the characters that cover only
    bytes of ``raw``.
    """
    cores = []
    for shift in range(3):
        encoded = encode(b"\0" * shift + raw)
        start = -(-shift * 4 // 3)  # characters that also cover the zero padding
        end = (shift + len(raw)) // 3 * 4  # characters of whole 3-byte groups only
        core = encoded[start:end]
        if len(core) >= 8:
            cores.append(core)
    return cores


def _redis_values(client: Any, key: bytes, db: int) -> Iterator[tuple[str, bytes]]:
    """``(where, bytes)`` for the key's name and every value stored under it (``client``: a redis-py client that
    answers bytes; typed loosely, since whatever a key holds is what is scanned)."""
    name = key.decode("utf-8", "replace")
    where = f"redis db{db} key {name!r}"
    yield f"{where} (name)", key
    kind = client.type(key).decode()
    if kind == "string":
        yield where, client.get(key) or b""
    elif kind == "hash":
        for field, value in client.hscan_iter(key, count=1000):
            yield f"{where} hash field {field.decode('utf-8', 'replace')!r}", field + b"\n" + value
    elif kind == "list":
        for index, value in enumerate(client.lrange(key, 0, -1)):
            yield f"{where} list item {index}", value
    elif kind == "set":
        for value in client.sscan_iter(key, count=1000):
            yield f"{where} set member", value
    elif kind == "zset":
        for value, _ in client.zscan_iter(key, count=1000):
            yield f"{where} sorted-set member", value
    elif kind == "stream":
        for entry_id, fields in client.xrange(key):
            yield f"{where} stream entry {entry_id.decode()}", b"\n".join(k + b"=" + v for k, v in fields.items())


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"nothing to scan at {path}")
