"""What the chaos drill counts: object versions, worker log events, connections, poison-guard leftovers, and secrets
(with the project's ``pipeline/local/secret_scan.py``; a minimal raw-substring scanner stands in if it cannot be
imported).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.storage.records import FAILURE_SUFFIX, PROVENANCE_SUFFIX

_RECEIVED = re.compile(r"Task sts\.convert\[([^\]]+)\] received")
_ENDED = re.compile(r"Task sts\.convert\[([^\]]+)\] (?:succeeded|retry|raised)")
_CANCELLED_ON_LOSS = "cannot be acknowledged after a connection loss"
_S3_REQUEUE = re.compile(r"S3 unavailable \(.*\); re-queued")
_CONNECTED = "Connected to redis://"


# --- versions on the versioned output bucket

@dataclass
class Versions:
    """Keys of the output bucket with more than one version, by kind."""

    outputs: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)
    failure_rewrites: int = 0  # failure records written again by a retry: expected, not a duplicate
    keys: int = 0

    @property
    def duplicates(self) -> int:
        return len(self.outputs) + len(self.provenance)


def object_versions(s3: Any, bucket: str, prefix: str) -> Versions:
    """Count versions per key (delete markers left out) under ``prefix``."""
    counts: Counter[str] = Counter()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            counts[version["Key"]] += 1
    found = Versions(keys=len(counts))
    for key, n in sorted(counts.items()):
        if n < 2:
            continue
        if key.endswith(PROVENANCE_SUFFIX):
            found.provenance.append(key)
        elif key.endswith(FAILURE_SUFFIX):
            found.failure_rewrites += 1
        else:
            found.outputs.append(key)
    return found


# --- worker logs

def unfinished_tasks(log_text: str) -> int:
    """Deliveries a worker received and never finished (what a SIGKILL interrupted)."""
    return max(0, len(_RECEIVED.findall(log_text)) - len(_ENDED.findall(log_text)))


def received(log_text: str) -> int:
    """Deliveries a worker received."""
    return len(_RECEIVED.findall(log_text))


def cancelled_on_connection_loss(log_texts: Iterable[str]) -> int:
    """Running tasks Celery terminated because the broker connection was lost (acks late: they cannot be acked)."""
    return sum(text.count(_CANCELLED_ON_LOSS) for text in log_texts)


def storage_requeues(log_texts: Iterable[str]) -> int:
    """Jobs put back on the queue because S3 did not answer."""
    return sum(len(_S3_REQUEUE.findall(text)) for text in log_texts)


def connections_to(port: int, pgid: int) -> int:
    """Established TCP connections from the processes of group ``pgid`` to 127.0.0.1:``port`` (Linux /proc)."""
    inodes: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        except OSError:  # the process ended while we looked
            continue
    count = 0
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
            count += remote_port == port and state == "01" and inode in inodes
    return count


def broker_connections(log_text: str) -> int:
    """How many times a worker (re)connected to the broker."""
    return log_text.count(_CONNECTED)


# --- leftovers of a Redis wipe

def guard_leftovers(client: Any) -> dict[str, int]:
    """Poison-guard counters (``sts:unclean:*``) that are negative or never expire: a delivery that began before a
    wipe and ended after it decrements a key that no longer exists."""
    negative = no_ttl = total = 0
    for key in client.scan_iter(match="sts:unclean:*", count=1000):
        total += 1
        value = client.get(key)
        negative += value is not None and int(value) < 0
        no_ttl += client.ttl(key) == -1
    return {"keys": total, "negative": negative, "no_ttl": no_ttl}


def negative_unclean_deliveries(s3: Any, bucket: str, prefix: str) -> int:
    """Provenance records whose ``worker.unclean_deliveries_before`` is below zero (a guard counter gone negative)."""
    negative = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(PROVENANCE_SUFFIX):
                record = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
                negative += int((record.get("worker") or {}).get("unclean_deliveries_before", 0)) < 0
    return negative
