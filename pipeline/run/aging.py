"""Aging between priorities, so a low-priority run is never starved forever by a stream of higher ones.

kombu on Redis serves a queue's priority lists strictly in order (``BRPOP <queue> <queue>\\x06\\x163 ...`` takes the
first non-empty one): a higher run's queued work always starts first, and running jobs are never pre-empted. Strict
order alone lets a low run wait for as long as higher work keeps arriving. So every ``AGING_S`` seconds (one
``SET NX EX`` per queue decides who does it, checked by the worker after each job) the message that has waited longest
in each lower list is moved to the consumer end of the next higher list. A queued low job therefore climbs one level
per ``AGING_S`` at the most: the oldest low message is served within about (levels x ``AGING_S``) plus one job's
time, whatever arrives above it, while a high run's few jobs still overtake a bulk run's thousands at once. One
promotion per list per period costs Redis nothing measurable.

Redis keys (the broker's Redis): ``sts:queue:{queue}:aging`` string, the period's guard (TTL ``AGING_S``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

from pipeline.run.hold import PRIORITY_SEP

__all__ = ["AGING_S", "age_queue"]

#: seconds between promotions of the oldest waiting message of each lower priority list
AGING_S = 30
#: kombu's priority steps, highest first (``PRIORITIES`` uses 0, 3 and 6)
STEPS = (0, 3, 6, 9)

#: KEYS[1] guard, KEYS[2..n] the queue's lists from highest to lowest priority; ARGV[1] period (s).
#: Moves the oldest message (the consumer end, right) of each lower list to the consumer end of the one above.
_AGE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return -1
end
local moved = 0
for i = 2, #KEYS - 1 do
  local item = redis.call('RPOP', KEYS[i + 1])
  if item then
    redis.call('RPUSH', KEYS[i], item)
    moved = moved + 1
  end
end
return moved
"""

#: one client per process and broker (made after fork; shared by a threads worker's jobs, under the lock)
_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def _client(broker_url: str) -> Any:
    key = (os.getpid(), broker_url)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=10)
        return _clients[key]


def age_queue(broker_url: str, queue: str, *, period_s: int = AGING_S) -> int:
    """Promote once per period (-1 when another caller did it this period); never raises."""
    try:
        client = _client(broker_url)
        lists = [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in STEPS]
        keys = [f"sts:queue:{queue}:aging", *lists]
        return int(client.eval(_AGE, len(keys), *keys, str(period_s)))
    except redis.RedisError:
        return 0
