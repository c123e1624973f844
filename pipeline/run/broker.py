"""The broker is checked before anything uses it: a Redis that may evict keys, or keeps nothing on disk, loses jobs.

Queued task messages, the unacked deliveries, claims, budgets and live state are all Redis keys. Under memory pressure
a ``maxmemory-policy`` other than ``noeviction`` drops some of them without a word (a queued job is then never run,
a claim or a budget vanishes), so ``worker``, ``submit`` and ``retry`` refuse such a Redis unless
``STS_ALLOW_EVICTING_BROKER=1``. A Redis with neither AOF nor RDB save points loses every queued job when it
restarts: that is allowed (the S3 ledger tells ``retry`` what to redo) but said once, on one line.

The policy is read with ``CONFIG GET``; where CONFIG is disabled or renamed (managed Redis), from ``INFO memory``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from pipeline.config import Settings
from pipeline.errors import BrokerError, ConfigError

__all__ = ["BrokerHealth", "broker_health", "check_broker"]

FIX_COMMAND = "redis-cli CONFIG SET maxmemory-policy noeviction"
FIX_CONF_LINE = "maxmemory-policy noeviction"


@dataclass(frozen=True)
class BrokerHealth:
    """What a Redis says about keeping its keys: its eviction policy and whether it persists (None: unknown)."""

    maxmemory_policy: str | None
    persistent: bool | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config(client: Any, name: str) -> str | None:
    """``CONFIG GET name``, or None when CONFIG is not allowed."""
    try:
        reply = client.config_get(name)
    except redis.ResponseError:
        return None
    values = {_text(key): _text(value) for key, value in dict(reply).items()}
    return values.get(name)


def broker_health(client: Any) -> BrokerHealth:
    """Ask a Redis for its eviction policy and persistence."""
    policy = _config(client, "maxmemory-policy")
    if policy is None:
        memory = client.info("memory")
        policy = _text(memory["maxmemory_policy"]) if "maxmemory_policy" in memory else None
    appendonly = _config(client, "appendonly")
    save = _config(client, "save")
    if appendonly is None or save is None:
        persistence = client.info("persistence")
        aof = persistence.get("aof_enabled")
        persistent = True if aof in (1, "1") else None  # INFO does not show the save points
    else:
        persistent = appendonly == "yes" or bool(save.strip())
    return BrokerHealth(maxmemory_policy=policy, persistent=persistent)


def _where(url: str) -> str:
    """The Redis as a message names it: host, port and database, never a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def check_broker(settings: Settings, *, warn: Callable[[str], None] | None = None,
                 connect: Callable[[str], Any] | None = None) -> None:
    """Refuse (``ConfigError``) a broker or live-state Redis that may evict keys; warn when one keeps nothing on disk.

    ``STS_ALLOW_EVICTING_BROKER=1`` turns the refusal into a warning. A Redis that does not answer is a
    ``BrokerError``.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr))
    connect = connect or (lambda url: redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))
    for url in dict.fromkeys([settings.broker_url, settings.limiter_redis_url]):
        client = connect(url)
        try:
            health = broker_health(client)
        except redis.RedisError as error:
            raise BrokerError(f"Redis at {_where(url)} did not answer ({type(error).__name__}): start it, or check "
                              "STS_BROKER_URL and STS_LIMITER_URL") from None
        finally:
            client.close()
        if health.maxmemory_policy not in ("noeviction", None):
            message = (f"Redis at {_where(url)} has maxmemory-policy {health.maxmemory_policy}: under memory "
                       f"pressure it silently drops queued jobs and the pipeline's keys. Fix it with "
                       f"`{FIX_COMMAND}` (and `{FIX_CONF_LINE}` in redis.conf so it survives a restart), or set "
                       "STS_ALLOW_EVICTING_BROKER=1 to go on anyway")
            if not settings.allow_evicting_broker:
                raise ConfigError(message)
            warn(f"warning: {message} (going on: STS_ALLOW_EVICTING_BROKER=1)")
        if health.persistent is False:
            warn(f"warning: Redis at {_where(url)} keeps nothing on disk (no AOF, no RDB save points): a restart "
                 "loses every queued job (reconcile and retry find them again); `redis-cli CONFIG SET appendonly "
                 "yes` keeps them")
