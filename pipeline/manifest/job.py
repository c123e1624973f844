"""What one job is: the request parameters, where its input and output live, and its stable id.

A job id is a hash of everything that defines the result (input URI, every request parameter, output URI), so the
same manifest line always maps to the same job, and re-submitting a manifest never redoes finished work.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.formats import DEFAULT_MODEL_ID, DEFAULT_OUTPUT_FORMAT, MAX_SEED, OUTPUT_FORMATS, STS_MODEL_IDS
from pipeline.s3uri import S3Uri

_VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: the shape of a model id; whether the account has it and it can do voice conversion is the account's answer
#: (``validate --remote`` asks ``GET /v1/models``), not a list in this code
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

#: fields that travel to the API; everything in them is part of the job id
REQUEST_FIELDS = (
    "voice_id", "model_id", "seed", "voice_settings", "remove_background_noise", "file_format",
    "output_format", "enable_logging", "optimize_streaming_latency",
)


class VoiceSettings(BaseModel):
    """Per-request overrides of the voice's stored settings. Unset fields are not sent."""

    model_config = ConfigDict(extra="forbid", strict=True)

    stability: float | None = Field(default=None, ge=0.0, le=1.0)
    similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    style: float | None = Field(default=None, ge=0.0, le=1.0)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(default=None, ge=0.7, le=1.2)

    @field_validator("stability", "similarity_boost", "style", "speed", mode="before")
    @classmethod
    def _numbers_are_floats(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


class MasterTarget(BaseModel):
    """A loudness target for ``master``: integrated loudness (LUFS) and the true-peak ceiling (dBTP)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lufs: float = Field(ge=-36.0, le=-6.0)
    true_peak_db: float = Field(default=-1.0, ge=-9.0, le=0.0)

    @field_validator("lufs", "true_peak_db", mode="before")
    @classmethod
    def _numbers_are_floats(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


class Job(BaseModel):
    """One manifest line, validated. Field names are the API's."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    input: str
    output: str | None = None
    voice_id: str
    model_id: str = DEFAULT_MODEL_ID
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    voice_settings: VoiceSettings | None = None
    remove_background_noise: bool = False
    file_format: Literal["pcm_s16le_16", "other"] = "other"
    output_format: str = DEFAULT_OUTPUT_FORMAT
    enable_logging: bool = True
    optimize_streaming_latency: int | None = Field(default=None, ge=0, le=4)
    id: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None
    max_segment_seconds: float | None = Field(default=None, ge=10.0, le=300.0)
    #: replace an object at the output that the pipeline did not write (not part of the job id: same result)
    overwrite: bool = False
    #: copy the source's tags, cover art and chapters onto the output (``manifest from-feed`` turns it on)
    copy_tags: bool = False
    #: loudness mastering of the output: "podcast" (-16 LUFS stereo, -19 mono, -1 dBTP) or an explicit target
    master: Literal["podcast"] | MasterTarget | None = None

    @field_validator("input")
    @classmethod
    def _input_is_s3(cls, value: str) -> str:
        S3Uri.parse(value)
        return value

    @field_validator("output")
    @classmethod
    def _output_is_s3(cls, value: str | None) -> str | None:
        if value is not None:
            S3Uri.parse(value, require_key=True)
        return value

    @field_validator("voice_id")
    @classmethod
    def _voice_id_shape(cls, value: str) -> str:
        if not _VOICE_ID.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("model_id")
    @classmethod
    def _model_id_shape(cls, value: str) -> str:
        if not _MODEL_ID.match(value):
            raise ValueError("must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit "
                             f"(models that can do voice conversion today: {', '.join(STS_MODEL_IDS)})")
        return value

    @field_validator("output_format")
    @classmethod
    def _known_output_format(cls, value: str) -> str:
        if value not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {value!r}; one of: {', '.join(OUTPUT_FORMATS)}")
        return value

    @field_validator("max_segment_seconds", mode="before")
    @classmethod
    def _segment_seconds_float(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @model_validator(mode="after")
    def _output_differs_from_input(self) -> Job:
        if self.output is not None and self.output == self.input:
            raise ValueError("output must not overwrite the input")
        return self

    # --- identity
    def request_params(self) -> dict[str, Any]:
        """Every request parameter, defaults filled in, in canonical form."""
        params = {name: getattr(self, name) for name in REQUEST_FIELDS}
        params["voice_settings"] = (
            self.voice_settings.model_dump(exclude_none=True) if self.voice_settings else None
        )
        return params

    def job_id(self, output_prefix: str | None = None) -> str:
        """The stable id: a hash of input, request parameters and output (or the prefix it will be derived from)."""
        if self.output is None and output_prefix is None:
            raise ValueError("a job without an output needs an output prefix to have an id")
        identity = {"input": self.input, "params": self.request_params(),
                    "output": self.output or {"prefix": output_prefix.rstrip("/") if output_prefix else None},
                    "max_segment_seconds": self.max_segment_seconds}
        if self.copy_tags:  # only when set, so the ids of lines without it stay what they were
            identity["copy_tags"] = True
        if self.master is not None:
            identity["master"] = self.master if isinstance(self.master, str) else self.master.model_dump()
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return digest[:24]

    def resolved_output(self, output_prefix: str | None = None) -> str:
        """The output URI: the line's own, or ``<prefix>/<job id>.<extension>``."""
        if self.output is not None:
            return self.output
        if output_prefix is None:
            raise ValueError("a job without an output needs an output prefix")
        extension = OUTPUT_FORMATS[self.output_format].extension
        return f"{output_prefix.rstrip('/')}/{self.job_id(output_prefix)}.{extension}"

    def to_manifest_line(self) -> dict[str, Any]:
        """The job as a manifest line again (for retry manifests): unset optional fields left out."""
        return self.model_dump(mode="json", exclude_none=True)
