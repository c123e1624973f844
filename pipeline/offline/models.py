"""The models the offline server lists. Only the two speech-to-speech models may be used for a conversion."""

from __future__ import annotations

from typing import Any

#: the models that can do voice conversion (``can_do_voice_conversion``), the vendor's default first
STS_MODEL_IDS = ("eleven_english_sts_v2", "eleven_multilingual_sts_v2")
DEFAULT_MODEL_ID = STS_MODEL_IDS[0]

_MODELS = (
    ("eleven_english_sts_v2", "Eleven English v2", "Speech-to-speech model for English.", ["en"], True, False),
    ("eleven_multilingual_sts_v2", "Eleven Multilingual v2", "Speech-to-speech model for 29 languages; the vendor's "
     "recommended choice, also for English.", ["en", "de", "es", "fr", "it", "ja", "pl", "pt"], True, False),
    ("eleven_multilingual_v2", "Eleven Multilingual v2", "Text-to-speech model (listed so clients can see a model "
     "that cannot convert voices).", ["en", "de", "es", "fr"], False, True),
)


def models_payload() -> list[dict[str, Any]]:
    """The body of ``GET /v1/models`` (a JSON list, like the vendor's)."""
    return [
        {
            "model_id": model_id,
            "name": name,
            "description": description,
            "can_be_finetuned": False,
            "can_do_text_to_speech": tts,
            "can_do_voice_conversion": sts,
            "can_use_style": True,
            "can_use_speaker_boost": True,
            "serves_pro_voices": False,
            "languages": [{"language_id": code, "name": code} for code in languages],
            "requires_alpha_access": False,
            "max_characters_request_free_user": 2500,
            "max_characters_request_subscribed_user": 10000,
        }
        for model_id, name, description, languages, sts, tts in _MODELS
    ]
