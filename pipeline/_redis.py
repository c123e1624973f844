"""Redis helpers shared by the stages that keep live state there (limiter, budget, run state)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)


def text(value: bytes | str | int) -> str:
    """A Redis reply as text (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_hash_tag_safe(name: str) -> bool:
    """Whether ``name`` can go inside a ``{...}`` hash tag of a key (cluster slot): non-empty, no spaces or braces."""
    return bool(name) and not any(ch.isspace() or ch in "{}" for ch in name)


def best_effort(action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a Redis write that must never undo the job: log a Redis fault and carry on.

    Used for what is recorded after a response or an outcome (limiter feedback, budget settlement, live state). Raising
    there would throw away audio already paid for, or a result already durable in S3; skipping the write costs only a
    lesson the limiter did not learn, credits the budget did not count, or a stale ``status``.
    """
    try:
        action(*args, **kwargs)
    except redis.RedisError as error:
        log.warning("could not write to Redis (%s: %s); carrying on without it",
                    getattr(action, "__qualname__", "?"), type(error).__name__)
