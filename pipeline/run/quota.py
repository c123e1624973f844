"""The account's quota, shared by every worker: once the service says the period's credits are spent, nobody spends.

The service answers ``401 quota_exceeded`` (or ``402``) when the credits are gone; every request after that would get
the same answer. The first worker that hears it closes the gate for the API key until the reset the service
announced (or ``DEFAULT_HOLD_S`` when it did not say); every job that has not converted yet is deferred with reason
``quota_exceeded``, so ``retry`` finishes the night once the quota resets or is raised. The preflight (``plan``,
``submit``, ``validate --remote``) opens the gate again when the subscription shows credits left.

Redis key:

    sts:quota:{key_id}     string  JSON {"message", "resets_at"}; expires at the reset (at least a minute from now)
"""

from __future__ import annotations

import json
import time

import redis

from pipeline._redis import is_hash_tag_safe, text
from pipeline.errors import QuotaExceededError

__all__ = ["QuotaGate"]

#: how long the gate stays closed when the service did not say when the quota resets
DEFAULT_HOLD_S = 3600
MIN_HOLD_S = 60


class QuotaGate:
    """Whether the account behind one API key (by its limiter ``key_id``) may spend."""

    def __init__(self, client: redis.Redis, key_id: str) -> None:
        if not is_hash_tag_safe(key_id):
            raise ValueError("key_id must be a non-empty hash of the API key (key_id_for)")
        self._redis = client
        self._key = f"sts:quota:{key_id}"

    def close(self, error: QuotaExceededError) -> None:
        now = time.time()
        hold_s = int(error.resets_at - now) if error.resets_at and error.resets_at > now else DEFAULT_HOLD_S
        self._redis.set(self._key, json.dumps({"message": error.message, "resets_at": error.resets_at}),
                        ex=max(MIN_HOLD_S, hold_s))

    def check(self) -> None:
        """``QuotaExceededError`` while the gate is closed: the request is not sent."""
        value = self._redis.get(self._key)
        if value is None:
            return
        record = json.loads(text(value))
        raise QuotaExceededError(f"not sent, the account's credits are spent: {record.get('message', '')}",
                                 resets_at=record.get("resets_at"))

    def open(self) -> None:
        self._redis.delete(self._key)
