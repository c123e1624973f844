"""Validation of a conversion request's query and form fields, with the service's 422 shape.

Every problem is reported at once as ``RejectedError(detail=[{"type", "loc", "msg", "input"}, ...])`` with ``loc``
starting at ``"query"`` or ``"body"``, as the vendor's (FastAPI) service does. Empty form values count as absent and
unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from pipeline.errors import RejectedError
from pipeline.formats import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS
from pipeline.offline.models import DEFAULT_MODEL_ID, STS_MODEL_IDS

MAX_SEED = 4294967295


class VoiceSettingsIn(BaseModel):
    """``voice_settings``: the request's overrides of the voice's stored settings (absent = the voice's own)."""

    model_config = ConfigDict(extra="ignore")

    stability: float | None = Field(default=None, ge=0.0, le=1.0)
    similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    style: float | None = Field(default=None, ge=0.0, le=1.0)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(default=None, ge=0.7, le=1.2)

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    enable_logging: bool = True
    optimize_streaming_latency: int | None = Field(default=None, ge=0, le=4)
    output_format: str = DEFAULT_OUTPUT_FORMAT

    @field_validator("output_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in OUTPUT_FORMATS:
            names = [f"'{name}'" for name in OUTPUT_FORMATS]
            expected = ", ".join(names[:-1]) + f" or {names[-1]}"
            raise PydanticCustomError("enum", "Input should be {expected}", {"expected": expected})
        return value


class FormFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_id: str = DEFAULT_MODEL_ID
    voice_settings: Json[VoiceSettingsIn | None] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    remove_background_noise: bool = False
    file_format: Literal["pcm_s16le_16", "other"] = "other"

    @field_validator("model_id")
    @classmethod
    def _sts_model(cls, value: str) -> str:
        if value not in STS_MODEL_IDS:
            raise PydanticCustomError(
                "value_error", "Model '{model_id}' cannot do speech-to-speech (can_do_voice_conversion is false); "
                "use one of {models}", {"model_id": value, "models": ", ".join(STS_MODEL_IDS)})
        return value


@dataclass(frozen=True)
class ConversionParams:
    """A validated request (the audio itself is handled by the caller)."""

    query: QueryParams
    form: FormFields

    @property
    def settings_overrides(self) -> dict[str, Any]:
        return self.form.voice_settings.overrides() if self.form.voice_settings else {}


def _problems(error: ValidationError, where: str) -> list[dict[str, Any]]:
    return [{"type": item["type"], "loc": [where, *item["loc"]], "msg": item["msg"], "input": item.get("input")}
            for item in error.errors(include_url=False, include_context=False)]


def missing_audio_problem() -> dict[str, Any]:
    return {"type": "missing", "loc": ["body", "audio"], "msg": "Field required", "input": None}


def audio_limit_problem(message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ["body", "audio"], "msg": message, "input": None}


def parse_request(query: Mapping[str, str], form: Mapping[str, str], *, has_audio: bool) -> ConversionParams:
    """Validate everything but the audio's content; ``RejectedError`` lists every problem found."""
    problems: list[dict[str, Any]] = []
    parsed_query = parsed_form = None
    try:
        parsed_query = QueryParams.model_validate({k: v for k, v in query.items() if v != ""})
    except ValidationError as error:
        problems += _problems(error, "query")
    try:
        parsed_form = FormFields.model_validate({k: v for k, v in form.items() if v != ""})
    except ValidationError as error:
        problems += _problems(error, "body")
    if not has_audio:
        problems.append(missing_audio_problem())
    if problems or parsed_query is None or parsed_form is None:
        raise RejectedError(f"the request is invalid: {problems[0]['msg'] if problems else 'unknown'}",
                            detail=problems)
    return ConversionParams(parsed_query, parsed_form)
