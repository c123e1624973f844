"""Speech-like test recordings made from scratch: no downloads, deterministic for a seed.

A phrase is a run of syllables: a glottal-pulse-like harmonic series on a moving f0 contour, shaped by three formant
peaks and a syllable envelope. Phrases are separated by pauses, so silence detection and timing checks have real
structure to work on. Long files are written phrase by phrase, so a three-hour file never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

#: formant centre frequencies (Hz) and bandwidths of a neutral vowel
_FORMANTS = ((500.0, 80.0), (1500.0, 110.0), (2500.0, 160.0))


def _formant_gain(freqs: np.ndarray, shift: float) -> np.ndarray:
    gain = np.zeros_like(freqs)
    for centre, width in _FORMANTS:
        gain += 1.0 / (1.0 + ((freqs - centre * shift) / width) ** 2)
    return gain + 0.02


def _syllable(rng: np.random.Generator, sr: int, f0_hz: float) -> np.ndarray:
    dur_s = rng.uniform(0.14, 0.32)
    n = int(dur_s * sr)
    t = np.arange(n) / sr
    contour = f0_hz * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(1.5, 4.0) * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(contour) / sr
    shift = rng.uniform(0.85, 1.2)
    out = np.zeros(n)
    for k in range(1, int(4000 / f0_hz)):
        amp = _formant_gain(np.array([k * f0_hz]), shift)[0] / k**0.5
        out += amp * np.sin(k * phase)
    envelope = np.sin(np.pi * np.linspace(0.0, 1.0, n)) ** 0.7
    noise = rng.normal(0.0, 0.01, n)  # breath
    return (out * envelope + noise * envelope).astype(np.float64)


def speech_like_phrases(
    duration_s: float, sr: int = 16000, *, f0_hz: float = 120.0, seed: int = 0,
    phrase_s: tuple[float, float] = (1.5, 4.0), pause_s: tuple[float, float] = (0.35, 0.7),
) -> Iterator[np.ndarray]:
    """Yield float32 blocks (a phrase, then its pause) that add up to exactly ``duration_s`` seconds."""
    rng = np.random.default_rng(seed)
    remaining = int(round(duration_s * sr))
    while remaining > 0:
        target = int(rng.uniform(*phrase_s) * sr)
        parts: list[np.ndarray] = []
        length = 0
        while length < target:
            syl = _syllable(rng, sr, f0_hz * rng.uniform(0.9, 1.1))
            gap = np.zeros(int(rng.uniform(0.02, 0.06) * sr))
            parts += [syl, gap]
            length += len(syl) + len(gap)
        phrase = np.concatenate(parts)
        phrase = 0.3 * phrase / max(1e-9, float(np.max(np.abs(phrase))))
        pause = rng.normal(0.0, 0.0005, int(rng.uniform(*pause_s) * sr))
        block = np.concatenate([phrase, pause]).astype(np.float32)[:remaining]
        remaining -= len(block)
        yield block


def speech_like(duration_s: float, sr: int = 16000, *, f0_hz: float = 120.0, seed: int = 0) -> np.ndarray:
    """A speech-like mono float32 signal of exactly ``duration_s`` seconds."""
    return np.concatenate(list(speech_like_phrases(duration_s, sr, f0_hz=f0_hz, seed=seed)))


def write_speech_like(path: Path, duration_s: float, sr: int = 16000, *, f0_hz: float = 120.0, seed: int = 0,
                      subtype: str = "PCM_16") -> Path:
    """Write a speech-like WAV (or FLAC, by suffix) block by block; memory stays flat for any length."""
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype=subtype) as out:
        for block in speech_like_phrases(duration_s, sr, f0_hz=f0_hz, seed=seed):
            out.write(block)
    return path
