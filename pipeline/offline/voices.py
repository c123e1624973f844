"""The offline server's built-in voices: stable ids, what each one does to a recording, and the API's voice listing.

A voice is a DSP recipe, not a model: an f0 (pitch) ratio, a formant (spectral envelope) ratio, and two optional
character traits, ``monotone`` (flatten the intonation toward its median: robot) and ``whisper`` (synthesize every
frame unvoiced). Ids are 20 characters like the vendor's, fixed forever: tests, demos and manifests name them.

More voices come from ``--voices FILE`` (``VoiceSpec``: any id, a name and a recipe) and ``--generated-voices N``
(N plain voices with ids ``Gen00000000000000001`` and up, to page through). ``GET /v2/voices`` is ``voice_search``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: when the built-in voices were "created" (``created_at_unix``); added voices count up from here
_CREATED_AT_UNIX = 1_700_000_000


@dataclass(frozen=True)
class VoiceDefaults:
    """The settings a voice uses when the request sends no ``voice_settings`` (the vendor's premade defaults)."""

    stability: float = 0.5
    similarity_boost: float = 0.75
    style: float = 0.0
    use_speaker_boost: bool = True
    speed: float = 1.0

    def to_api(self) -> dict[str, Any]:
        return {"stability": self.stability, "similarity_boost": self.similarity_boost, "style": self.style,
                "use_speaker_boost": self.use_speaker_boost, "speed": self.speed}


@dataclass(frozen=True)
class Voice:
    """One built-in voice. ``f0_ratio`` and ``formant_ratio`` multiply the input's pitch and formant frequencies."""

    voice_id: str
    name: str
    f0_ratio: float
    formant_ratio: float
    description: str
    labels: dict[str, str]
    monotone: bool = False
    whisper: bool = False
    defaults: VoiceDefaults = field(default_factory=VoiceDefaults)
    category: str = "premade"
    created_at_unix: int = _CREATED_AT_UNIX

    def to_api(self) -> dict[str, Any]:
        """The voice as ``GET /v1/voices``, ``/v2/voices`` and ``/v1/voices/{voice_id}`` give it
        (``VoiceResponseModel``)."""
        return {
            "voice_id": self.voice_id,
            "name": self.name,
            "category": self.category,
            "labels": dict(self.labels),
            "description": self.description,
            "preview_url": None,
            "available_for_tiers": [],
            "settings": self.defaults.to_api(),
            "high_quality_base_model_ids": [],
            "samples": None,
            "fine_tuning": None,
            "sharing": None,
            "verified_languages": [],
            "safety_control": None,
            "voice_verification": None,
            "permission_on_resource": None,
            "is_owner": self.category != "premade",
            "is_legacy": False,
            "is_mixed": False,
            "created_at_unix": self.created_at_unix,
        }


class VoiceSpec(BaseModel):
    """One voice of ``--voices FILE`` or ``PUT /_admin/account``: its id and name, and the recipe it converts with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voice_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = Field(min_length=1)
    f0_ratio: float = Field(default=1.0, ge=0.25, le=4.0)
    formant_ratio: float = Field(default=1.0, ge=0.5, le=2.0)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    monotone: bool = False
    whisper: bool = False
    category: Literal["generated", "cloned", "premade", "professional", "famous", "high_quality"] = "cloned"

    def to_voice(self, index: int) -> Voice:
        return Voice(self.voice_id, self.name, f0_ratio=self.f0_ratio, formant_ratio=self.formant_ratio,
                     description=self.description, labels=dict(self.labels), monotone=self.monotone,
                     whisper=self.whisper, category=self.category, created_at_unix=_CREATED_AT_UNIX + 1 + index)


def generated_voices(count: int) -> list[Voice]:
    """``count`` plain voices (ids ``Gen`` + 17 digits), pitch ratios cycling from 0.8 to 1.25."""
    ratios = (0.8, 0.9, 1.0, 1.1, 1.25)
    return [Voice(f"Gen{n:017d}", f"Generated {n:04d}", f0_ratio=ratios[n % len(ratios)], formant_ratio=1.0,
                  description=f"Generated voice {n}: pitch x{ratios[n % len(ratios)]:.2f}.",
                  labels={"use_case": "testing"}, category="generated", created_at_unix=_CREATED_AT_UNIX + 10_000 + n)
            for n in range(1, count + 1)]


_VOICE_LIST = (
    Voice("BKkWQENix2VWeAv6YV5R", "Bram", f0_ratio=0.70, formant_ratio=0.88,
          description="Deep, low male voice: pitch x0.70, formants x0.88.",
          labels={"gender": "male", "age": "middle_aged", "accent": "neutral", "descriptive": "deep",
                  "use_case": "narration"}),
    Voice("AxUN8DXFT6JYQPLTV7j9", "Lena", f0_ratio=1.80, formant_ratio=1.18,
          description="Higher female voice: pitch x1.80, formants x1.18.",
          labels={"gender": "female", "age": "young", "accent": "neutral", "descriptive": "bright",
                  "use_case": "conversational"}),
    Voice("vK7n2rg6OeynABb4ilbv", "Pip", f0_ratio=2.30, formant_ratio=1.30,
          description="Child-like voice: pitch x2.30, formants x1.30.",
          labels={"gender": "neutral", "age": "child", "accent": "neutral", "descriptive": "playful",
                  "use_case": "characters"}),
    Voice("xmXfcXc3zRgo3GlCx0pq", "Unit-7", f0_ratio=0.90, formant_ratio=0.95, monotone=True,
          description="Robot: intonation flattened to one pitch (x0.90 of the input's median), formants x0.95.",
          labels={"gender": "neutral", "age": "ageless", "accent": "synthetic", "descriptive": "robotic",
                  "use_case": "characters"}),
    Voice("UrXYMu6EzF7WBxStuf7v", "Hush", f0_ratio=1.0, formant_ratio=1.05, whisper=True,
          description="Whisper: every frame synthesized unvoiced (no pitch), formants x1.05.",
          labels={"gender": "neutral", "age": "young", "accent": "neutral", "descriptive": "whispery",
                  "use_case": "asmr"}),
)

#: every built-in voice, by id
VOICES: dict[str, Voice] = {voice.voice_id: voice for voice in _VOICE_LIST}

#: the voice demos and tests use when they do not care which
DEFAULT_VOICE_ID = "AxUN8DXFT6JYQPLTV7j9"

#: the built-in voices in listing order
BUILTIN_VOICES: tuple[Voice, ...] = _VOICE_LIST
