"""Small generated inputs (3 s of speech-like audio as WAV, stereo, 5.1, FLAC, mp3 and raw PCM), made once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.local.samples import speech_like
from tests.audio.helpers import RATE, SECONDS, ffmpeg


@pytest.fixture(scope="package")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    x = speech_like(SECONDS, RATE, seed=1)
    out = {"wav": d / "speech.wav", "stereo": d / "stereo.wav", "six": d / "six.wav"}
    sf.write(out["wav"], x, RATE, subtype="PCM_16")
    sf.write(out["stereo"], np.stack([x, 0.5 * x], axis=1), RATE, subtype="PCM_16")
    sf.write(out["six"], np.stack([x * (0.2 + 0.1 * c) for c in range(6)], axis=1), RATE, subtype="PCM_16")
    out["flac"] = d / "speech.flac"
    sf.write(out["flac"], x, RATE, subtype="PCM_16")
    out["mp3"] = d / "speech.mp3"
    ffmpeg("-i", str(out["wav"]), "-c:a", "libmp3lame", "-b:a", "128k", str(out["mp3"]))
    out["pcm"] = d / "speech.pcm"
    ffmpeg("-i", str(out["wav"]), "-ar", "16000", "-f", "s16le", str(out["pcm"]))
    return out
