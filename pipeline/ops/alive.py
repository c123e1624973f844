"""Workers alive: each worker's visibility heartbeat (``workers/heartbeat.py``) also says "alive" here, so the
exporter can count workers without Celery's events (the workers run ``--without-gossip`` and without ``-E``).

Redis key (in the broker's Redis: it is about the queue's consumers):

    sts:workers:{queue}   ZSET  member = worker node name, score = its last beat (epoch seconds)

and, for Kubernetes probes, a file whose mtime is the last beat (``STS_HEARTBEAT_FILE``): a probe reads an mtime,
where ``celery inspect ping`` would import the whole app and cost seconds of CPU on a busy node.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

__all__ = ["alive_key", "beat", "count_alive", "touch"]

#: a member older than this many beats is gone for good (pruned on the next beat)
FORGET_AFTER_BEATS = 20


def alive_key(queue: str) -> str:
    return f"sts:workers:{queue}"


def beat(client: redis.Redis, queue: str, node: str, interval_s: float) -> None:
    """Record one beat of ``node``, a worker consuming ``queue``."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(alive_key(queue), {node: now})
    pipe.zremrangebyscore(alive_key(queue), "-inf", now - FORGET_AFTER_BEATS * interval_s)
    pipe.expire(alive_key(queue), int(max(60.0, FORGET_AFTER_BEATS * interval_s)))
    pipe.execute()


def count_alive(client: redis.Redis, queue: str, within_s: float) -> int:
    """Workers of ``queue`` that beat within the last ``within_s`` seconds."""
    return int(client.zcount(alive_key(queue), time.time() - within_s, "+inf"))


def touch(path: str | os.PathLike[str]) -> None:
    """Set the heartbeat file's mtime to now (created if missing)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()
    os.utime(target, None)


def fresh(path: str | os.PathLike[str], max_age_s: float) -> bool:
    """Whether the heartbeat file was touched within ``max_age_s`` (what a probe asks)."""
    try:
        return time.time() - Path(path).stat().st_mtime <= max_age_s
    except OSError:
        return False
