"""Voice conversion with WORLD (pyworld), as pure functions on float arrays at the working rate.

One segment is analysed (dio + stonemask f0, cheaptrick envelope, d4c aperiodicity), reshaped by a ``Transform``
(pitch ratio and contour shaping, formant warp, presence EQ, time stretch) and resynthesized. The output of a segment
is exactly ``round(len(x) / speed)`` samples long: WORLD's extra frame is trimmed, a short output is padded.
Loudness and peak control live in ``level.py``; cutting long inputs into blocks lives in ``blocks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld as pw
from scipy.ndimage import uniform_filter1d

#: every conversion runs at this rate; outputs are resampled to the output format's rate afterwards
WORK_RATE_HZ = 16000
FRAME_PERIOD_MS = 5.0
#: dio's default floor (71 Hz) drops low male voices; 60 Hz keeps them voiced
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 700.0
#: centre and width of the speaker-boost presence bell
PRESENCE_CENTRE_HZ = 3000.0
PRESENCE_WIDTH_HZ = 1200.0
#: frames over which the seeded pitch drift is smoothed (100 ms): a slow wander, not a rough jitter
DRIFT_SMOOTH_FRAMES = 20


@dataclass(frozen=True)
class Transform:
    """Everything that shapes one conversion (see ``effects.transform_for`` for how a request maps to it)."""

    f0_ratio: float = 1.0
    formant_ratio: float = 1.0
    #: moving-average width over the log-f0 contour, in frames (1 = no smoothing)
    smoothing_frames: int = 1
    #: scale of the log-f0 excursion around its median (1 = unchanged, 2 = twice as expressive)
    excursion: float = 1.0
    #: 1 = intonation flattened to the median (robot), 0 = untouched
    monotone: float = 0.0
    #: synthesize every frame unvoiced (whisper)
    whisper: bool = False
    #: standard deviation of the seeded slow pitch drift, in semitones
    drift_semitones: float = 0.0
    #: gain of the presence bell on the spectral envelope, in dB (0 = off)
    presence_db: float = 0.0
    #: playback speed: output duration = input duration / speed
    speed: float = 1.0


@dataclass
class Frames:
    """WORLD's analysis of a segment: per-frame f0 (0 = unvoiced), power envelope and aperiodicity."""

    f0_hz: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray


def analyze(x: np.ndarray, rate_hz: int = WORK_RATE_HZ) -> Frames:
    """Run WORLD's analysis on a mono signal."""
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    f0, times = pw.dio(x64, rate_hz, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    f0 = pw.stonemask(x64, f0, times, rate_hz)
    envelope = pw.cheaptrick(x64, f0, times, rate_hz, f0_floor=F0_FLOOR_HZ)
    aperiodicity = pw.d4c(x64, f0, times, rate_hz)
    return Frames(f0, envelope, aperiodicity)


def shape_log_f0(f0_hz: np.ndarray, transform: Transform, drift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The new log-f0 contour (defined on every frame) and the voicing mask.

    Unvoiced gaps are bridged by interpolation so that smoothing and stretching see a continuous contour; the mask
    puts the gaps back. ``drift`` is a unit-variance noise sequence, one value a frame, scaled here.
    """
    voiced = f0_hz > 0
    if transform.whisper or not voiced.any():
        return np.zeros_like(f0_hz), np.zeros_like(voiced)
    frames = np.arange(len(f0_hz))
    log_f0 = np.interp(frames, frames[voiced], np.log(f0_hz[voiced]))
    median = float(np.median(log_f0[voiced]))
    if transform.smoothing_frames > 1:
        log_f0 = uniform_filter1d(log_f0, size=transform.smoothing_frames, mode="nearest")
    log_f0 = median + (log_f0 - median) * transform.excursion * (1.0 - transform.monotone)
    log_f0 = log_f0 + drift * transform.drift_semitones * np.log(2.0) / 12.0
    return log_f0 + np.log(transform.f0_ratio), voiced


def smooth_noise(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Seeded slow noise with unit standard deviation (zero for very short inputs)."""
    raw = rng.standard_normal(n_frames + 2 * DRIFT_SMOOTH_FRAMES)
    slow = uniform_filter1d(raw, size=DRIFT_SMOOTH_FRAMES)[DRIFT_SMOOTH_FRAMES:DRIFT_SMOOTH_FRAMES + n_frames]
    std = float(slow.std()) if n_frames > 1 else 0.0
    return slow / std if std > 0 else np.zeros(n_frames)


def warp_envelope(envelope: np.ndarray, ratio: float) -> np.ndarray:
    """Move formants by ``ratio``: new(f) = old(f / ratio), linear interpolation between bins."""
    if ratio == 1.0:
        return envelope
    n_bins = envelope.shape[1]
    source = np.arange(n_bins) / ratio
    lower = np.clip(np.floor(source).astype(int), 0, n_bins - 1)
    upper = np.clip(lower + 1, 0, n_bins - 1)
    weight = np.clip(source - lower, 0.0, 1.0)[None, :]
    return np.ascontiguousarray(envelope[:, lower] * (1.0 - weight) + envelope[:, upper] * weight)


def presence_gain(n_bins: int, gain_db: float, rate_hz: int = WORK_RATE_HZ) -> np.ndarray:
    """Power gain per envelope bin of a bell around 3 kHz (speaker boost)."""
    freqs = np.linspace(0.0, rate_hz / 2, n_bins)
    bell_db = gain_db * np.exp(-0.5 * ((freqs - PRESENCE_CENTRE_HZ) / PRESENCE_WIDTH_HZ) ** 2)
    return np.asarray(10.0 ** (bell_db / 10.0))


def stretch_frames(n_frames: int, speed: float) -> np.ndarray:
    """Fractional source-frame positions of the output frames when playing ``speed`` times faster."""
    n_out = max(1, round((n_frames - 1) / speed) + 1)
    return np.asarray(np.minimum(np.arange(n_out) * speed, float(n_frames - 1)))


def _resample_rows(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, len(values) - 1)
    weight = positions - lower
    if values.ndim == 2:
        weight = weight[:, None]
    return np.asarray(values[lower] * (1.0 - weight) + values[upper] * weight)


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim WORLD's extra samples, or pad a short output with silence, to exactly ``n`` samples."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def convert(x: np.ndarray, transform: Transform, rng: np.random.Generator,
            rate_hz: int = WORK_RATE_HZ) -> np.ndarray:
    """Convert one segment; the result has ``round(len(x) / transform.speed)`` samples (float64)."""
    n_out = round(len(x) / transform.speed)
    frames = analyze(x, rate_hz)
    log_f0, voiced = shape_log_f0(frames.f0_hz, transform, smooth_noise(rng, len(frames.f0_hz)))
    envelope = warp_envelope(frames.envelope, transform.formant_ratio)
    if transform.presence_db:
        envelope = envelope * presence_gain(envelope.shape[1], transform.presence_db, rate_hz)[None, :]
    aperiodicity = frames.aperiodicity
    if transform.speed != 1.0:
        positions = stretch_frames(len(log_f0), transform.speed)
        log_f0 = _resample_rows(log_f0, positions)
        voiced = voiced[np.rint(positions).astype(int)]
        envelope = _resample_rows(envelope, positions)
        aperiodicity = _resample_rows(aperiodicity, positions)
    f0 = np.where(voiced, np.exp(log_f0), 0.0)
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(envelope),
                      np.ascontiguousarray(aperiodicity), rate_hz, FRAME_PERIOD_MS)
    return fit_length(y, n_out)

