"""Validation of a conversion request's query and form fields, with the service's 422 shape.

Every problem is reported at once as ``Invalid([{"type", "loc", "msg", "input"}, ...])`` with ``loc`` starting at
``"query"`` or ``"body"``, as the vendor's (FastAPI) service does. Empty form values count as absent and unknown
fields are ignored. Whether ``model_id`` names a model that can convert voices is the account's business (see
``endpoint``), not this schema's: the vendor's schema types it as a plain string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from pipeline.formats import DEFAULT_MODEL_ID, DEFAULT_OUTPUT_FORMAT, MAX_SEED, OUTPUT_FORMATS
from pipeline.offline.problems import Invalid, problem_item


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
    return problem_item(("body", "audio"), "Field required", kind="missing")


def not_a_file_problem(value: object) -> dict[str, Any]:
    return problem_item(("body", "audio"), f"Expected UploadFile, received: {type(value)}")


def parse_request(query: Mapping[str, str], form: Mapping[str, str], *, audio: object) -> ConversionParams:
    """Validate everything but the audio's content; ``Invalid`` lists every problem found. ``audio`` is the form's
    ``audio`` value: an upload, a text field (a problem) or None (missing)."""
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
    if audio is None:
        problems.append(missing_audio_problem())
    elif isinstance(audio, str):
        problems.append(not_a_file_problem(audio))
    if problems or parsed_query is None or parsed_form is None:
        raise Invalid(problems)
    return ConversionParams(parsed_query, parsed_form)
