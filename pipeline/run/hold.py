"""Pause and resume a run without queue churn: its queued messages are parked once, not re-queued every few seconds.

The trap is a worker that takes a paused run's message and re-queues it with a countdown: every message then comes
back every few seconds, costing Redis and worker processes for as long as the pause lasts (a countdown also holds the
message unacked in a worker's memory). Instead:

- ``pause`` sets the flag, then one Lua pass over the queue's lists (the base list and kombu's priority lists
  ``<queue>\\x06\\x16<p>``) moves every message of the run into the parking list: O(queue) once, atomic with
  respect to workers popping from the same lists (a message is either still queued or parked, never both);
- a worker that still receives one of the run's messages (it was prefetched, reserved, held for its countdown, or
  published after the pass) parks the job in one script (``park_if_held``) and the task ends without a retry;
- ``resume`` clears the flag first, then puts the parked messages back at the consumer end of their lists (they
  were queued first) and re-sends the jobs workers parked. A worker parks only while the flag is set, so every
  parked job is seen by the resume that follows.

While paused, nothing of the run is touched: Redis sees only the workers' ordinary polling.

Redis keys (on the broker's Redis, where the queue lists are; ``held`` and ``parked_jobs`` on the live-state Redis):

    sts:run:{run_id}:held          string the pause as JSON (who, at, why); its presence is the pause
    sts:run:{run_id}:parked        list   "<source list>\\n<kombu message>" moved off the queue by ``pause``
    sts:run:{run_id}:parked_jobs   list   JobMessage dicts (JSON) a worker parked instead of running them
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.run.state import RUN_TTL_S

__all__ = ["PRIORITY_SEP", "RunHold", "queue_lists"]

#: kombu's separator between a queue's name and its priority (``kombu.transport.redis.Channel.sep``)
PRIORITY_SEP = "\x06\x16"

#: KEYS[1] parking list, KEYS[2..n] the queue's lists; ARGV[1] the run's task-id prefix ("<run_id>:").
#: Moves every message whose task id starts with the prefix; keeps the others in order. Returns how many moved.
_PARK_QUEUED = """
local moved = 0
for i = 2, #KEYS do
  local items = redis.call('LRANGE', KEYS[i], 0, -1)
  local keep, park = {}, {}
  for _, item in ipairs(items) do
    local ok, message = pcall(cjson.decode, item)
    local id = ok and type(message) == 'table' and type(message.headers) == 'table' and message.headers.id
    if type(id) == 'string' and string.sub(id, 1, #ARGV[1]) == ARGV[1] then
      park[#park + 1] = KEYS[i] .. '\\n' .. item
    else
      keep[#keep + 1] = item
    end
  end
  if #park > 0 then
    redis.call('DEL', KEYS[i])
    for j = 1, #keep, 1000 do redis.call('RPUSH', KEYS[i], unpack(keep, j, math.min(j + 999, #keep))) end
    for j = 1, #park, 1000 do redis.call('RPUSH', KEYS[1], unpack(park, j, math.min(j + 999, #park))) end
    moved = moved + #park
  end
end
return moved
"""

#: KEYS[1] parking list; ARGV[1] how many at most. Moves parked messages back onto their lists, at the consumer end
#: (kombu pops from the right), oldest consumed first. Returns how many items it took off the parking list.
_UNPARK = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, item in ipairs(items) do
  local cut = string.find(item, '\\n', 1, true)
  if cut then
    redis.call('RPUSH', string.sub(item, 1, cut - 1), string.sub(item, cut + 1))
  end
end
redis.call('LTRIM', KEYS[1], #items, -1)
return #items
"""

#: KEYS[1] held flag, KEYS[2] parked jobs; ARGV[1] the job message (JSON), ARGV[2] ttl_s. 1 if parked, 0 if not held.
_PARK_JOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
"""

#: messages moved back per script call on resume (keeps each call short)
UNPARK_BATCH = 1000


def queue_lists(queue: str) -> list[str]:
    """Every list kombu may keep ``queue``'s messages in: the base list and priorities 1-9."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10)]


class RunHold:
    """One run's pause: the flag, the parked queue messages and the jobs workers parked."""

    def __init__(self, live: Any, run_id: str, broker: Any | None = None) -> None:
        self._live = live
        self._broker = broker if broker is not None else live
        self.run_id = run_id
        self._held = f"sts:run:{run_id}:held"
        self._parked = f"sts:run:{run_id}:parked"
        self._parked_jobs = f"sts:run:{run_id}:parked_jobs"

    def held(self) -> str | None:
        value = self._live.get(self._held)
        return value.decode() if isinstance(value, bytes) else value

    def pause(self, record: str, queue: str) -> int:
        """Set the flag, then park the run's queued messages; return how many were parked."""
        self._live.set(self._held, record, ex=RUN_TTL_S)
        keys = [self._parked, *queue_lists(queue)]
        moved = int(self._broker.eval(_PARK_QUEUED, len(keys), *keys, f"{self.run_id}:"))
        self._broker.expire(self._parked, RUN_TTL_S)
        return moved

    def park_if_held(self, message: dict[str, Any]) -> bool:
        """In a worker, before a job starts: park it if the run is paused (one script). True when parked."""
        keys = [self._held, self._parked_jobs]
        return bool(self._live.eval(_PARK_JOB, len(keys), *keys, json.dumps(message), str(RUN_TTL_S)))

    def resume(self, send: Callable[[dict[str, Any]], None]) -> tuple[int, int]:
        """Clear the flag, then put the parked messages back and re-send (``send``) the jobs workers parked.

        Returns (messages put back, jobs re-sent).
        """
        self._live.delete(self._held)
        back = 0
        while moved := int(self._broker.eval(_UNPARK, 1, self._parked, str(UNPARK_BATCH))):
            back += moved
        resent = 0
        while (raw := self._live.lpop(self._parked_jobs)) is not None:
            send(json.loads(raw))
            resent += 1
        return back, resent

    def parked(self) -> int:
        return int(self._broker.llen(self._parked)) + int(self._live.llen(self._parked_jobs))

