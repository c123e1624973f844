"""What the account can tell before anything is spent: its models, its voices and its subscription.

Each answer is one cheap GET that costs no credits: ``GET /v1/models`` (which models can do voice conversion),
``GET /v2/voices?voice_ids=…`` (at most 100 ids a request; ``/v1/voices`` stops working past 500 voices in a
workspace), ``GET /v1/user/subscription`` (tier, credits spent and allowed this period, the reset time). Nothing is
cached: the key stays in the ``xi-api-key`` header of this process and its answers in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline import __version__
from pipeline.config import Settings
from pipeline.errors import ApiError, AuthError, TransientError, register_secret
from pipeline.formats import MAX_VOICE_IDS_PER_REQUEST

__all__ = ["Account", "ModelInfo", "Subscription"]


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    can_do_voice_conversion: bool


@dataclass(frozen=True)
class Subscription:
    tier: str
    character_count: int
    character_limit: int
    next_reset_unix: int | None

    @property
    def credits_left(self) -> int:
        return max(0, self.character_limit - self.character_count)


def _int(value: Any) -> int | None:
    """A count from the account's JSON; None for anything that is not a finite number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


class Account:
    """The account endpoints for one API base URL and key."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 15.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        register_secret(api_key)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport,
                                  headers={"xi-api-key": api_key, "user-agent": f"sts-pipeline/{__version__}"})

    @classmethod
    def from_settings(cls, settings: Settings) -> Account:
        return cls(settings.api_base_url, settings.api_key_value() or "")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Account:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> dict[str, ModelInfo]:
        body = self._get("/v1/models")
        models = body if isinstance(body, list) else []
        return {str(m["model_id"]): ModelInfo(str(m["model_id"]), bool(m.get("can_do_voice_conversion")))
                for m in models if isinstance(m, dict) and m.get("model_id")}

    def existing_voices(self, voice_ids: Iterable[str]) -> set[str]:
        """Which of ``voice_ids`` the account has (looked up 100 at a time)."""
        wanted = sorted(set(voice_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), MAX_VOICE_IDS_PER_REQUEST):
            batch = wanted[start:start + MAX_VOICE_IDS_PER_REQUEST]
            body = self._get("/v2/voices", params=[("voice_ids", v) for v in batch]
                             + [("page_size", str(MAX_VOICE_IDS_PER_REQUEST))])
            voices = body.get("voices") if isinstance(body, dict) else None
            found.update(str(v["voice_id"]) for v in voices or [] if isinstance(v, dict) and v.get("voice_id"))
        return found & set(wanted)

    def subscription(self) -> Subscription:
        body = self._get("/v1/user/subscription")
        data = body if isinstance(body, dict) else {}
        return Subscription(tier=str(data.get("tier") or "unknown"),
                            character_count=_int(data.get("character_count")) or 0,
                            character_limit=_int(data.get("character_limit")) or 0,
                            next_reset_unix=_int(data.get("next_character_count_reset_unix")))

    def _get(self, path: str, *, params: Any = None) -> Any:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as error:
            raise TransientError(f"the service did not answer GET {path} ({type(error).__name__}); check "
                                 "STS_API_BASE_URL and try again", reason="network") from None
        if response.status_code == 401:
            raise AuthError(f"the service refused the API key on GET {path} (401): set STS_API_KEY to a valid key",
                            status=401, request_id=response.headers.get("request-id"))
        if response.status_code != 200:
            raise ApiError(f"the service answered {response.status_code} to GET {path}", status=response.status_code,
                           request_id=response.headers.get("request-id"))
        try:
            return response.json()
        except json.JSONDecodeError:
            raise ApiError(f"the service answered GET {path} with something that is not JSON",
                           status=response.status_code) from None
