"""Loudness as podcast platforms measure it: integrated loudness (BS.1770), loudness range (EBU Tech 3342) and true
peak (4x oversampled), in one streaming pass over a mono signal at its own rate.

``quality.measure`` already reports an integrated loudness for every output, on a 16 kHz copy, which is right for
flagging outliers; mastering needs the figures a platform's meter (ffmpeg's ``ebur128=peak=true``) will read, so this
meter runs at the file's own rate and adds true peak and LRA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.signal
from pyloudnorm.iirfilter import IIRfilter

SUBBLOCK_S = 0.1
OVERSAMPLE = 4
_FLOOR = -120.0


@dataclass(frozen=True)
class Loudness:
    lufs: float | None  # None: silent (nothing above the absolute gate)
    true_peak_db: float
    lra: float | None
    samples: int

    def to_dict(self) -> dict[str, float | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)
        return {"lufs": rounded(self.lufs), "true_peak_db": rounded(self.true_peak_db), "lra": rounded(self.lra)}


def k_weighting(rate: int) -> np.ndarray:
    """BS.1770 K-weighting (high shelf, then high pass) as second-order sections (pyloudnorm's coefficients)."""
    stages = (IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"))
    return np.array([np.concatenate([stage.b, stage.a]) for stage in stages])


#: the 4x interpolation filter: 49 taps (12 a phase, as BS.1770's), linear phase, so its delay is 24 samples exactly
_INTERPOLATOR = scipy.signal.firwin(49, 0.9 / OVERSAMPLE, window=("kaiser", 8.0)) * OVERSAMPLE
_DELAY = (len(_INTERPOLATOR) - 1) // 2


def true_peak_envelope(x: np.ndarray) -> np.ndarray:
    """Per sample, the largest magnitude of the 4x oversampled signal around it (the inter-sample peaks)."""
    if not len(x):
        return np.zeros(0, dtype=np.float32)
    up = scipy.signal.upfirdn(_INTERPOLATOR, x.astype(np.float64), OVERSAMPLE)[_DELAY: _DELAY + len(x) * OVERSAMPLE]
    return np.abs(up).reshape(len(x), OVERSAMPLE).max(axis=1)


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else _FLOOR


def _gated(powers: np.ndarray, relative_lu: float) -> np.ndarray:
    """Block powers above the absolute gate (-70 LUFS) and ``relative_lu`` below their mean."""
    loud = powers[-0.691 + 10 * np.log10(np.maximum(powers, 1e-30)) >= -70.0]
    if not len(loud):
        return loud
    gate = -0.691 + 10 * math.log10(float(loud.mean())) + relative_lu
    return loud[-0.691 + 10 * np.log10(np.maximum(loud, 1e-30)) > gate]


def _integrated(subblocks: np.ndarray) -> float | None:
    if len(subblocks) < 4:
        return None
    blocks = np.convolve(subblocks, np.ones(4) / 4, mode="valid")  # 400 ms, 75 % overlap
    gated = _gated(blocks, -10.0)
    return -0.691 + 10 * math.log10(float(gated.mean())) if len(gated) else None


def _range(subblocks: np.ndarray) -> float | None:
    if len(subblocks) < 30:
        return None
    short = np.convolve(subblocks, np.ones(30) / 30, mode="valid")  # 3 s windows, 100 ms apart
    gated = _gated(short, -20.0)
    if len(gated) < 2:
        return None
    levels = -0.691 + 10 * np.log10(gated)
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def measure_loudness(blocks: Iterable[np.ndarray], rate: int) -> Loudness:
    """Integrated loudness, LRA and true peak of a mono stream of float blocks at ``rate``."""
    sos = k_weighting(rate)
    state = np.zeros((sos.shape[0], 2))
    size = round(SUBBLOCK_S * rate)
    carry = np.zeros(0)
    sums: list[np.ndarray] = []
    peak = 0.0
    samples = 0
    for block in blocks:
        samples += len(block)
        if not len(block):
            continue
        peak = max(peak, float(true_peak_envelope(block).max()))
        weighted, state = scipy.signal.sosfilt(sos, block.astype(np.float64), zi=state)
        values = np.concatenate([carry, np.square(weighted)])
        whole = len(values) // size * size
        sums.append(values[:whole].reshape(-1, size).mean(axis=1))
        carry = values[whole:]
    subblocks = np.concatenate(sums) if sums else np.zeros(0)
    return Loudness(_integrated(subblocks), _db(peak), _range(subblocks), samples)
