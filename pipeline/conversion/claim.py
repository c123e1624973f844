"""One delivery converts a job at a time: a short-lived claim per job id in Redis, renewed while the job runs.

Two deliveries of the same job can run at once: a second ``submit`` of the same manifest, a redelivery after a
visibility timeout, a ``retry`` while the first run still works. Both see "not committed" and both would pay. The
first to claim the job converts it; the other waits a bounded time for the claim, then re-checks the commit marker
(committed: done, without spending) or goes back to the queue undecided (``JobClaimed``). The commit marker in S3
stays the final word: a claim only keeps two deliveries from spending at the same time, and a claim that lapsed
(its worker died, Redis lost it) costs at most one extra conversion, never a second output.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

import redis

from pipeline.errors import Deferred
from pipeline.reasons import Reason

log = logging.getLogger(__name__)

__all__ = ["JobClaim", "JobClaimed"]

#: KEYS[1] = sts:claim:{job_id}   ARGV[1] = this delivery's token   ARGV[2] = new time to live (ms).
#: Extend the claim only if it is still ours; 1 if it was, else 0 (it lapsed and may be another delivery's now).
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS[1] = sts:claim:{job_id}   ARGV[1] = this delivery's token.
#: Delete the claim only if it is still ours (compare-and-delete); 1 if it was deleted, else 0.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class JobClaimed(Deferred):
    """Another delivery holds the job's claim: this one goes back to the queue, nothing decided about the job."""

    reason = Reason.CLAIMED.value


class JobClaim:
    """The claim of one job by one delivery.

    Redis key (expires ``ttl_s`` after the last renewal, so a dead worker's claim lapses by itself):

        sts:claim:{job_id}    string    a random token of the delivery converting the job

    ``acquire`` sets it with ``SET NX PX``; while held, a daemon thread renews it every third of ``ttl_s``
    (``RENEW_LUA``); ``release`` deletes it only if it still holds this delivery's token (``RELEASE_LUA``).
    """

    def __init__(self, client: Any, job_id: str, *, ttl_s: float = 30.0) -> None:
        self._redis = client  # redis.Redis; Any so that tests may pass a stand-in
        self.key = f"sts:claim:{job_id}"
        self._ttl_ms = max(1000, int(ttl_s * 1000))
        self._token = secrets.token_hex(16)
        self._held = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False  # set when a renewal found the claim gone or taken: another delivery may run too

    @property
    def held(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        """Take the claim if nobody holds it; start renewing it. True if this delivery holds it now."""
        if self._held:
            return True
        if not self._redis.set(self.key, self._token, nx=True, px=self._ttl_ms):
            return False
        self._held = True
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name=f"claim-{self.key}", daemon=True)
        self._renewer.start()
        return True

    def acquire(self, wait_s: float, *, poll_s: float = 0.25) -> bool:
        """Take the claim, waiting up to ``wait_s`` for another delivery to release it (or for it to lapse)."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(max(0.01, min(poll_s, deadline - time.monotonic())))
        return True

    def release(self) -> None:
        """Stop renewing and delete the claim if it is still this delivery's. Safe to call more than once."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        self._redis.eval(RELEASE_LUA, 1, self.key, self._token)

    def _renew_until_stopped(self) -> None:
        interval_s = self._ttl_ms / 3000
        while not self._stop.wait(interval_s):
            try:
                renewed = self._redis.eval(RENEW_LUA, 1, self.key, self._token, self._ttl_ms)
            except redis.RedisError as error:  # keep trying: the claim lives ttl_s past the last renewal
                log.warning("could not renew the claim %s (%s)", self.key, type(error).__name__)
                continue
            if not renewed:
                self.lost = True
                log.warning("the claim %s lapsed while its job ran; another delivery may convert it too (the "
                            "commit marker still keeps one output)", self.key)
                return

    def __enter__(self) -> JobClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
