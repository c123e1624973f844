"""How a voice and the request's ``voice_settings`` become a DSP ``Transform``. Every setting has an audible effect:

- ``stability`` (0 to 1): a moving average over the log-f0 contour, 5 ms (0) to 205 ms (1) wide; it also lowers
  the seeded slow pitch drift from 0.5 semitone (0) to 0.05 semitone (1) standard deviation.
- ``similarity_boost`` (0 to 1): exponent on the voice's formant ratio, 0.5 + 2/3 x similarity: 0 gives half the
  voice's formant shift (in log), 0.75 (the default) exactly its shift, 1 gives 7/6 of it.
- ``style`` (0 to 1): scales the log-f0 excursion around its median by 1 + style (1 = twice as expressive).
- ``use_speaker_boost``: a +3 dB presence bell around 3 kHz on the spectral envelope.
- ``speed`` (0.7 to 1.2): time stretch of the WORLD frame sequence; output duration = input duration / speed, pitch
  kept.

Settings the request leaves out come from the voice's defaults (``VoiceDefaults``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.offline.dsp import Transform
from pipeline.offline.voices import Voice, VoiceDefaults

MAX_SMOOTHING_HALF_WIDTH_FRAMES = 20
DRIFT_MIN_SEMITONES = 0.05
DRIFT_RANGE_SEMITONES = 0.45
SPEAKER_BOOST_DB = 3.0


def resolve_settings(voice: Voice, overrides: Mapping[str, Any]) -> VoiceDefaults:
    """The voice's defaults with the request's explicit settings on top."""
    return dataclasses.replace(voice.defaults, **dict(overrides))


def transform_for(voice: Voice, overrides: Mapping[str, Any]) -> Transform:
    """The conversion a request asks for (see the module table)."""
    settings = resolve_settings(voice, overrides)
    return Transform(
        f0_ratio=voice.f0_ratio,
        formant_ratio=voice.formant_ratio ** (0.5 + settings.similarity_boost * 2.0 / 3.0),
        smoothing_frames=1 + 2 * round(MAX_SMOOTHING_HALF_WIDTH_FRAMES * settings.stability),
        excursion=1.0 + settings.style,
        monotone=1.0 if voice.monotone else 0.0,
        whisper=voice.whisper,
        drift_semitones=DRIFT_MIN_SEMITONES + DRIFT_RANGE_SEMITONES * (1.0 - settings.stability),
        presence_db=SPEAKER_BOOST_DB if settings.use_speaker_boost else 0.0,
        speed=settings.speed,
    )
