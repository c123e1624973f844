"""The models the offline server lists (``GET /v1/models``), built in or added with ``--models FILE``.

Only a model with ``can_do_voice_conversion`` may be used for a conversion: an unknown ``model_id`` is answered 404
``model_not_found``, a known one that cannot convert voices 400 ``invalid_parameters`` (``param: model_id``).
``character_cost_multiplier`` (``model_rates``) multiplies what a request with the model is billed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.formats import DEFAULT_MODEL_ID, STS_MODEL_IDS

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL_ID", "STS_MODEL_IDS", "ModelSpec"]

_LANGUAGE_NAMES = {"en": "English", "de": "German", "es": "Spanish", "fr": "French", "it": "Italian",
                   "ja": "Japanese", "pl": "Polish", "pt": "Portuguese", "hi": "Hindi", "zh": "Chinese"}


class ModelSpec(BaseModel):
    """One model as ``--models FILE`` or ``PUT /_admin/account`` give it; the rest of the vendor's fields are fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    description: str = ""
    can_do_voice_conversion: bool = True
    can_do_text_to_speech: bool = False
    languages: tuple[str, ...] = ("en",)
    concurrency_group: Literal["standard", "turbo"] = "standard"
    character_cost_multiplier: float = Field(default=1.0, ge=0.0)

    def to_api(self) -> dict[str, Any]:
        """The model as ``GET /v1/models`` lists it (``ModelResponseModel``)."""
        return {
            "model_id": self.model_id,
            "name": self.name or self.model_id,
            "description": self.description,
            "can_be_finetuned": False,
            "can_do_text_to_speech": self.can_do_text_to_speech,
            "can_do_voice_conversion": self.can_do_voice_conversion,
            "can_use_style": True,
            "can_use_speaker_boost": True,
            "serves_pro_voices": False,
            "token_cost_factor": 1.0,
            "requires_alpha_access": False,
            "max_characters_request_free_user": 2500,
            "max_characters_request_subscribed_user": 10000,
            "maximum_text_length_per_request": 10000,
            "languages": [{"language_id": code, "name": _LANGUAGE_NAMES.get(code, code)} for code in self.languages],
            "model_rates": {"character_cost_multiplier": self.character_cost_multiplier},
            "concurrency_group": self.concurrency_group,
        }


#: the models every server lists, the service's default first
BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(model_id=STS_MODEL_IDS[0], name="Eleven English v2", description="Speech-to-speech model for English."),
    ModelSpec(model_id=STS_MODEL_IDS[1], name="Eleven Multilingual v2",
              description="Speech-to-speech model for 29 languages; the vendor's recommended choice, also for English.",
              languages=("en", "de", "es", "fr", "it", "ja", "pl", "pt")),
    ModelSpec(model_id="eleven_multilingual_v2", name="Eleven Multilingual v2",
              description="Text-to-speech model (listed so clients can see a model that cannot convert voices).",
              can_do_voice_conversion=False, can_do_text_to_speech=True, languages=("en", "de", "es", "fr")),
)
assert BUILTIN_MODELS[0].model_id == DEFAULT_MODEL_ID
