"""Fault injection: the knobs that make the offline server misbehave like a busy remote service, and their dice.

All knobs are off by default, set by ``serve-local`` flags at start and changeable at runtime through
``PUT /_admin/faults``. Each admitted conversion request draws three numbers from one ``random.Random``, always in the
same order (status fault, cut, cut point), so a ``fault_seed`` makes the sequence of faults reproducible for a given
order of requests; changing ``fault_seed`` at runtime restarts the sequence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: where in the audio a cut stream stops, as a share of the expected output
CUT_FRACTION_RANGE = (0.1, 0.9)


class FaultSettings(BaseModel):
    """The fault knobs. Rates are probabilities per admitted request; latency is a floor on the total time."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_concurrent: int | None = Field(default=None, ge=1,
                                       description="requests in flight beyond this get 429 concurrent_limit_exceeded")
    rate_limit_per_minute: int | None = Field(default=None, ge=1,
                                              description="requests in 60 s beyond this get 429 rate_limit_exceeded")
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0, description="share answered 429 system_busy")
    rate_500: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_503: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_cut: float = Field(default=0.0, ge=0.0, le=1.0, description="share of 200 responses whose body is cut short")
    latency_fixed_s: float = Field(default=0.0, ge=0.0)
    latency_per_audio_second_s: float = Field(default=0.0, ge=0.0)
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After on the cap's and system_busy's 429s")
    omit_error_request_id: bool = Field(default=False, description="errors carry their id only in detail.request_id")
    fault_seed: int | None = None

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultSettings:
        if self.rate_429 + self.rate_500 + self.rate_503 > 1.0:
            raise ValueError("rate_429 + rate_500 + rate_503 must not exceed 1")
        return self

    def min_total_s(self, audio_s: float) -> float:
        """The least time a response of ``audio_s`` seconds of input takes, arrival to last byte."""
        return self.latency_fixed_s + self.latency_per_audio_second_s * audio_s


@dataclass(frozen=True)
class Draw:
    """One request's fate: an injected error status (or None) and where its body is cut (or None)."""

    status: int | None
    cut_fraction: float | None


class FaultInjector:
    """Holds the current knobs and draws each request's faults."""

    def __init__(self, settings: FaultSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.fault_seed)

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        """Apply a partial change (validated as a whole); a new ``fault_seed`` restarts the random sequence."""
        self._settings = FaultSettings.model_validate({**self._settings.model_dump(), **changes})
        if "fault_seed" in changes:
            self._rng = random.Random(self._settings.fault_seed)
        return self._settings

    def draw(self) -> Draw:
        knobs = self._settings
        status_u, cut_u, cut_at = self._rng.random(), self._rng.random(), self._rng.uniform(*CUT_FRACTION_RANGE)
        status = None
        for code, rate in ((429, knobs.rate_429), (500, knobs.rate_500), (503, knobs.rate_503)):
            if status_u < rate:
                status = code
                break
            status_u -= rate
        return Draw(status, cut_at if cut_u < knobs.rate_cut else None)
