"""The mastering meter: integrated loudness as pyloudnorm reads it, true peak between the samples, LRA."""

from __future__ import annotations

import numpy as np
import pyloudnorm

from pipeline.audio.loudness import measure_loudness
from pipeline.local.samples import speech_like


def test_integrated_loudness_matches_pyloudnorm_across_blocks() -> None:
    x = speech_like(12, 44100, seed=1).astype(np.float32)
    blocks = (x[i:i + 44100 * 5] for i in range(0, len(x), 44100 * 5))
    measured = measure_loudness(blocks, 44100)
    assert measured.lufs is not None and abs(measured.lufs - pyloudnorm.Meter(44100).integrated_loudness(x)) < 0.01
    assert measured.samples == len(x)


def test_true_peak_sees_between_the_samples() -> None:
    rate = 48000
    t = np.arange(rate * 2) / rate
    x = np.sin(2 * np.pi * rate / 4 * t + np.pi / 4).astype(np.float32)  # every sample at ±0.707: 3 dB below the peak
    measured = measure_loudness([x], rate)
    assert abs(20 * np.log10(np.abs(x).max()) + 3.01) < 0.01
    assert abs(measured.true_peak_db) < 0.1


def test_a_steady_tone_has_no_loudness_range_and_silence_no_loudness() -> None:
    rate = 16000
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(rate * 10) / rate)).astype(np.float32)
    assert measure_loudness([tone], rate).lra is not None and measure_loudness([tone], rate).lra < 0.1
    silent = measure_loudness([np.zeros(rate * 5, dtype=np.float32)], rate)
    assert silent.lufs is None and silent.lra is None
