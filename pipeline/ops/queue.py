"""Queue depth counted the way kombu's Redis transport stores a queue, so an autoscaler sees all the work.

Two traps make the obvious ``LLEN <queue>`` wrong:

- priorities: a message with priority *p* > 0 sits in its own list ``<queue>\\x06\\x16<p>`` (kombu's ``_q_for_pri``;
  the steps are 0, 3, 6, 9 by default, any of 0–9 if configured), so the base list misses them;
- reserved work: a message a worker has fetched (running, or prefetched) is out of every list and lives in the
  ``unacked`` hash (its tag scored in ``unacked_index``) until it is acked. A queue of 0 with every worker busy is
  not an idle queue: an autoscaler that reads only the lists scales in under full load.

So depth = every priority list + the unacked messages routed to the queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from pipeline._redis import text

__all__ = ["PRIORITY_SEP", "QueueDepth", "priority_lists", "queue_depth"]

#: kombu's separator between a queue's name and its priority (``kombu.transport.redis.Channel.sep``)
PRIORITY_SEP = "\x06\x16"
#: kombu's unacked hash: delivery tag -> JSON [message, exchange, routing_key]
UNACKED_KEY = "unacked"


@dataclass(frozen=True)
class QueueDepth:
    queued: int  # in any priority list
    reserved: int  # fetched by a worker (running or prefetched), not yet acked

    @property
    def total(self) -> int:
        return self.queued + self.reserved


def priority_lists(queue: str) -> list[str]:
    """Every list kombu may keep ``queue``'s messages in: the base list (priority 0) and priorities 1–9."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10)]


def _reserved_by_queue(client: redis.Redis) -> dict[str, int]:
    """Unacked messages per routing key (Celery routes a task to its queue's name by default)."""
    counts: dict[str, int] = {}
    for _, value in client.hscan_iter(UNACKED_KEY, count=500):
        try:
            routing_key = text(json.loads(value)[2])
        except (ValueError, IndexError, TypeError):
            routing_key = ""
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts


def queue_depth(client: redis.Redis, queues: list[str]) -> dict[str, QueueDepth]:
    """Depth of each queue: one pipelined LLEN per possible priority list, one scan of the unacked hash."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for name in priority_lists(queue):
            pipe.llen(name)
    lengths = pipe.execute()
    reserved = _reserved_by_queue(client)
    depths = {}
    for i, queue in enumerate(queues):
        queued = sum(int(n) for n in lengths[i * 10:(i + 1) * 10])
        depths[queue] = QueueDepth(queued=queued, reserved=reserved.get(queue, 0))
    return depths
