"""Names derived from secrets, safe to store: the limiter and budgets key on a hash of the API key, never the key."""

from __future__ import annotations

import hashlib


def api_key_id(api_key: str) -> str:
    """A short, stable, one-way id of an API key (for Redis key names and logs)."""
    return hashlib.sha256(("sts-pipeline:" + api_key).encode()).hexdigest()[:16]
