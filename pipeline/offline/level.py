"""Loudness matching and peak control: the output sounds as loud as the input and never clips.

WORLD changes loudness by a dB or two and can push peaks to full scale, so every converted block gets one gain:
the integrated-loudness difference to the matching input block (pyloudnorm, BS.1770), or the RMS difference when
the block is too short to gate (under 0.4 s) or silent, then lowered if the block's true peak (4x oversampled, so
resampling to any output rate stays under it) would exceed -1 dBFS.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import soxr

PEAK_CEILING_DBFS = -1.0
#: never boost or cut by more than this: a near-silent block must not be amplified into noise
MAX_GAIN_DB = 24.0
#: pyloudnorm's gating block; shorter signals have no integrated loudness
LUFS_MIN_S = 0.4
_SILENT_RMS = 1e-6
_OVERSAMPLE = 4


def integrated_lufs(x: np.ndarray, rate_hz: int) -> float | None:
    """Integrated loudness in LUFS, or None when the signal is too short or silent to measure."""
    if len(x) < LUFS_MIN_S * rate_hz:
        return None
    value = float(pyloudnorm.Meter(rate_hz).integrated_loudness(np.asarray(x, dtype=np.float64)))
    return value if math.isfinite(value) else None


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def true_peak(x: np.ndarray, rate_hz: int) -> float:
    """Peak magnitude of the signal oversampled 4x, which catches the peaks between samples."""
    if not len(x):
        return 0.0
    upsampled = soxr.resample(np.asarray(x, dtype=np.float64), rate_hz, rate_hz * _OVERSAMPLE)
    return max(float(np.max(np.abs(upsampled))), float(np.max(np.abs(x))))


def match_gain(reference: np.ndarray, y: np.ndarray, rate_hz: int) -> float:
    """The linear gain that makes ``y`` as loud as ``reference`` with its true peak at or under -1 dBFS."""
    ref_lufs, out_lufs = integrated_lufs(reference, rate_hz), integrated_lufs(y, rate_hz)
    if ref_lufs is not None and out_lufs is not None:
        gain_db = ref_lufs - out_lufs
    else:
        ref_rms, out_rms = rms(reference), rms(y)
        gain_db = 20.0 * math.log10(ref_rms / out_rms) if ref_rms > _SILENT_RMS and out_rms > _SILENT_RMS else 0.0
    gain = float(10.0 ** (max(-MAX_GAIN_DB, min(MAX_GAIN_DB, gain_db)) / 20.0))
    ceiling = 10.0 ** (PEAK_CEILING_DBFS / 20.0)
    peak = true_peak(y, rate_hz) * gain
    return gain * ceiling / peak if peak > ceiling else gain
