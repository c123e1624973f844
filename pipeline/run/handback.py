"""Hand back a reserved lower-priority message when higher work waits, so a high run's jobs start before it.

kombu serves a queue's priority lists strictly in order (aging.py), but only at the moment a worker pops: a message
popped just before a high run's messages arrive (taken as a pool process was freed, waiting in the worker's hands
for a process, or held there for a retry's countdown) would still start before them. So when a task starts, before
anything is done for its job, ``HandBack`` asks whether any list above the message's own priority holds work:

- no (the usual case): one EVALSHA of a script reading LLEN of those lists (none for the top priority); the job runs;
- yes: the same script returns the delivery's entry in kombu's ``unacked`` hash; the worker makes a copy (the same
  message with a fresh delivery tag and ``sts_hand_backs`` + 1 in its headers), and a second script, atomically,
  checks that the delivery is still unacked and higher work still waits, pushes the copy at the consumer end of the
  message's own list (kombu pops from the right: the low run keeps its order) and removes the original from
  ``unacked`` and ``unacked_index``. The task then ends; Celery's late ack of the original finds nothing to remove.

Nothing is lost or run twice: the copy appears and the original disappears in one script. A worker that dies before
it leaves the original unacked, re-queued after the visibility timeout like any job of a dead worker; one that dies
after has nothing left to ack. The copy has its own delivery tag, so the late ack of the original (ZREM and HDEL by
tag) cannot remove the entry of the worker that takes the copy meanwhile. A Redis fault (even a reply lost after the
script ran) means the job runs now: should the copy have been queued too, its delivery finds the job claimed or
committed and spends nothing, as for any redelivery.

It cannot ping-pong: a message is handed back at most ``MAX_HAND_BACKS`` times (the count travels in the copy's
headers); after that it runs whatever waits above it. Without the bound a message taken again while higher work
keeps arriving would bounce between the queue and a worker for as long as that lasts, a round trip and a pool
hand-off each time. Once is enough for what the hand-back is for: the copy is taken again only by a pop, and a pop
takes the higher lists first.

It cannot starve a run: a message that aging had promoted comes back to its own list once at most, at the consumer
end, where the next promotion takes it first; so aging's bound on the wait of the oldest low message (levels x
``AGING_S`` plus a job's time) at most doubles.

Redis keys (the broker's Redis, kombu's defaults): ``unacked`` hash delivery tag -> [message, exchange, routing key];
``unacked_index`` sorted set delivery tag -> time delivered; the queue's lists ``<queue>``, ``<queue>\\x06\\x16<p>``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from bisect import bisect
from typing import Any

import redis

from pipeline.run.aging import STEPS
from pipeline.run.hold import PRIORITY_SEP

__all__ = ["HAND_BACKS_HEADER", "MAX_HAND_BACKS", "HandBack", "hand_back_if_outranked"]

log = logging.getLogger(__name__)

#: the message header that counts how often a message was handed back
HAND_BACKS_HEADER = "sts_hand_backs"
#: hand-backs per message at most (see the module docstring: why the bound, and why once)
MAX_HAND_BACKS = 1
UNACKED_KEY = "unacked"  # kombu's default ``unacked_key`` transport option
UNACKED_INDEX_KEY = "unacked_index"  # kombu's default ``unacked_index_key`` transport option

#: KEYS[1] unacked hash, KEYS[2..n] the lists above the message's own; ARGV[1] delivery tag.
#: nil when every list above is empty; else the delivery's unacked entry (false when it is no longer unacked).
_OUTRANKED = """
for i = 2, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then
    return redis.call('HGET', KEYS[1], ARGV[1])
  end
end
return nil
"""

#: KEYS[1] unacked hash, KEYS[2] unacked index, KEYS[3] the message's own list, KEYS[4..n] the lists above it;
#: ARGV[1] the original's delivery tag, ARGV[2] the copy. 1 when the copy replaced the original, 0 when nothing moved
#: (the original is no longer unacked, or nothing waits above any more).
_HAND_BACK = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
for i = 4, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then
    redis.call('RPUSH', KEYS[3], ARGV[2])
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
    return 1
  end
end
return 0
"""


def _list_of(queue: str, step: int) -> str:
    """kombu's list for a priority step (``Channel._q_for_pri``): the base list for 0."""
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"


def _step(priority: int) -> int:
    """The step kombu files a message priority under (``Channel.priority``)."""
    return STEPS[bisect(STEPS, max(0, min(priority, STEPS[-1]))) - 1]


class HandBack:
    """The hand-back for one queue on the broker's Redis (scripts registered once per client)."""

    def __init__(self, broker: redis.Redis, queue: str) -> None:
        self._queue = queue
        self._outranked = broker.register_script(_OUTRANKED)
        self._hand_back = broker.register_script(_HAND_BACK)

    def __call__(self, delivery_tag: str | None, priority: int | None, hand_backs: int = 0) -> bool:
        """Hand the delivery back if higher work waits; True when it was (the task must then end at once)."""
        step = _step(int(priority or 0))
        above = [_list_of(self._queue, s) for s in STEPS if s < step]
        if not above or not delivery_tag or hand_backs >= MAX_HAND_BACKS:
            return False
        entry = self._outranked(keys=[UNACKED_KEY, *above], args=[delivery_tag])
        if not entry:
            return False
        message, _exchange, _routing_key = json.loads(entry)
        message["headers"][HAND_BACKS_HEADER] = hand_backs + 1
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
        keys = [UNACKED_KEY, UNACKED_INDEX_KEY, _list_of(self._queue, step), *above]
        return bool(self._hand_back(keys=keys, args=[delivery_tag, json.dumps(message)]))


#: one per process, broker and queue (made after fork; shared by a threads worker's jobs, under the lock)
_hand_backs: dict[tuple[int, str, str], HandBack] = {}
_hand_backs_lock = threading.Lock()


def _hand_back_for(broker_url: str, queue: str) -> HandBack:
    key = (os.getpid(), broker_url, queue)
    with _hand_backs_lock:
        if key not in _hand_backs:
            client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=10)
            _hand_backs[key] = HandBack(client, queue)
        return _hand_backs[key]


def hand_back_if_outranked(broker_url: str, queue: str, request: Any) -> bool:
    """In a task, first thing: hand its message back if higher work waits (``request`` is Celery's ``Task.request``).

    True when handed back. Never raises: a Redis fault only means the job runs now.
    """
    try:
        hand_back = _hand_back_for(broker_url, queue)
        return hand_back((request.properties or {}).get("delivery_tag"), (request.delivery_info or {}).get("priority"),
                         int(getattr(request, HAND_BACKS_HEADER, None) or 0))
    except (redis.RedisError, ValueError, KeyError, TypeError) as error:
        log.warning("could not check for higher-priority work (%s); the job runs now", type(error).__name__)
        return False
