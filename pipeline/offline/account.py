"""The account the offline server imitates: its plan (tier), its credits this period, its models and voices.

Set by ``serve-local`` flags at start (``--tier``, ``--credits-limit``, ``--credits-used``, ``--models``, ``--voices``,
``--generated-voices``) and changeable at runtime through ``PUT /_admin/account``. The plan decides which output
formats a request may ask for (``pipeline.formats.FORMAT_MIN_TIER``), the concurrency cap reported in
``maximum-concurrent-requests`` and the default ``character_limit`` (the plan's monthly credits). Every billed
response adds its cost to ``character_count``; a request whose cost would take it past ``character_limit`` is answered
401 ``quota_exceeded`` and not charged, so ``character_count`` never passes the limit.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.formats import TIERS, Tier
from pipeline.offline import problems
from pipeline.offline.models import BUILTIN_MODELS, ModelSpec
from pipeline.offline.voices import BUILTIN_VOICES, Voice, VoiceSpec, generated_voices

TierName = Literal["free", "starter", "creator", "pro", "scale", "business"]
#: the default plan: the cheapest that allows every output format (pcm_44100 needs Pro)
DEFAULT_TIER: TierName = "pro"
_PERIOD_S = 30 * 24 * 3600
#: voice slots by plan (``voice_limit``; informational)
_VOICE_LIMITS = {"free": 3, "starter": 10, "creator": 30, "pro": 160, "scale": 660, "business": 660}


def _next_reset() -> int:
    return int(time.time()) + _PERIOD_S


class AccountSettings(BaseModel):
    """The account's knobs. ``credits_limit`` None means the plan's monthly credits."""

    model_config = ConfigDict(extra="forbid")

    tier: TierName = DEFAULT_TIER
    credits_limit: int | None = Field(default=None, ge=0)
    credits_used: int = Field(default=0, ge=0)
    next_reset_unix: int = Field(default_factory=_next_reset, ge=0)
    models: list[ModelSpec] = Field(default_factory=list, description="added to (or replacing) the built-in models")
    voices: list[VoiceSpec] = Field(default_factory=list, description="added to (or replacing) the built-in voices")
    generated_voices: int = Field(default=0, ge=0, le=10_000)

    @model_validator(mode="after")
    def _unique_ids(self) -> AccountSettings:
        for kind, ids in (("model_id", [model.model_id for model in self.models]),
                          ("voice_id", [voice.voice_id for voice in self.voices])):
            if len(ids) != len(set(ids)):
                raise ValueError(f"every {kind} may appear once")
        return self


class Account:
    """The live account: settings plus the catalog built from them."""

    def __init__(self, settings: AccountSettings) -> None:
        self._apply(settings)

    def _apply(self, settings: AccountSettings) -> None:
        self._settings = settings
        models = {model.model_id: model for model in BUILTIN_MODELS}
        models.update({model.model_id: model for model in settings.models})
        self.models: dict[str, ModelSpec] = models
        voices: dict[str, Voice] = {voice.voice_id: voice for voice in BUILTIN_VOICES}
        voices.update({spec.voice_id: spec.to_voice(n) for n, spec in enumerate(settings.voices)})
        voices.update({voice.voice_id: voice for voice in generated_voices(settings.generated_voices)})
        self.voices: dict[str, Voice] = voices

    @property
    def settings(self) -> AccountSettings:
        return self._settings

    def update(self, changes: dict[str, Any]) -> AccountSettings:
        """Apply a partial change, validated as a whole (``ValidationError`` leaves the account as it was)."""
        self._apply(AccountSettings.model_validate({**self._settings.model_dump(), **changes}))
        return self._settings

    @property
    def tier(self) -> Tier:
        return TIERS[self._settings.tier]

    @property
    def credits_limit(self) -> int:
        limit = self._settings.credits_limit
        return self.tier.monthly_credits if limit is None else limit

    @property
    def credits_used(self) -> int:
        return self._settings.credits_used

    def check_quota(self, cost: int) -> None:
        """401 ``quota_exceeded`` if ``cost`` more credits would pass the limit."""
        if self.credits_used + cost > self.credits_limit:
            raise problems.quota_exceeded(self.credits_limit, self.credits_used, cost)

    def charge(self, cost: int) -> None:
        """Add ``cost`` (negative: a refund) to ``character_count``."""
        self._settings = self._settings.model_copy(update={"credits_used": max(0, self.credits_used + cost)})

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /_admin/account`` shows: the knobs and what they amount to."""
        return {**self._settings.model_dump(mode="json"), "effective_credits_limit": self.credits_limit,
                "concurrency": self.tier.concurrency}

    # --- the account endpoints' bodies

    def subscription(self) -> dict[str, Any]:
        """``GET /v1/user/subscription`` (``ExtendedSubscriptionResponseModel``)."""
        return {**self._subscription_core(), "has_open_invoices": False, "next_invoice": None, "pending_change": None}

    def _subscription_core(self) -> dict[str, Any]:
        tier = self.tier
        paid = tier.rank > 0
        return {
            "tier": tier.api_name,
            "character_count": self.credits_used,
            "character_limit": self.credits_limit,
            "max_character_limit_extension": None,
            "can_extend_character_limit": paid,
            "allowed_to_extend_character_limit": paid,
            "next_character_count_reset_unix": self._settings.next_reset_unix,
            "voice_slots_used": sum(1 for voice in self.voices.values() if voice.category != "premade"),
            "professional_voice_slots_used": 0,
            "voice_limit": _VOICE_LIMITS[tier.name],
            "max_voice_add_edits": None,
            "voice_add_edit_counter": 0,
            "professional_voice_limit": 1 if tier.rank >= TIERS["creator"].rank else 0,
            "can_extend_voice_limit": False,
            "can_use_instant_voice_cloning": paid,
            "can_use_professional_voice_cloning": tier.rank >= TIERS["creator"].rank,
            "currency": "usd" if paid else None,
            "status": "active" if paid else "free",
            "billing_period": "monthly_period" if paid else None,
            "character_refresh_period": "monthly_period",
        }

    def user(self) -> dict[str, Any]:
        """``GET /v1/user`` (``UserResponseModel``). The API key is never echoed."""
        return {
            "user_id": "offline-user-00000001",
            "subscription": self._subscription_core(),
            "subscription_extras": {
                "concurrency": self.tier.concurrency, "convai_concurrency": self.tier.concurrency,
                "force_logging_disabled": False, "can_request_manual_pro_voice_verification": False,
                "can_bypass_voice_captcha": False,
                "moderation": {"is_in_probation": False, "enterprise_check_nogo_voice": False,
                               "enterprise_check_block_nogo_voice": False, "never_live_moderate": False,
                               "nogo_voice_similar_voice_upload_count": 0,
                               "enterprise_background_moderation_enabled": False, "on_watchlist": False},
            },
            "is_new_user": False,
            "xi_api_key": None,
            "xi_api_key_preview": None,
            "is_api_key_hashed": True,
            "can_use_delayed_payment_methods": False,
            "is_onboarding_completed": True,
            "is_onboarding_checklist_completed": True,
            "first_name": "Offline",
            "created_at": 1_700_000_000,
        }
