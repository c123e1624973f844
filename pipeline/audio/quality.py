"""Quality checks on every output: duration drift, loudness, peak and clipping, leading and trailing silence.

One streaming decode, so memory stays flat for hours of audio (in process for mp3 and the headerless formats,
``decode.output_blocks``; ffmpeg for opus):

- Duration, sample peak and clipping are measured on every sample at the format's own rate.
- Loudness and silence are measured on a copy resampled to at most 16 kHz (soxr, streaming): speech carries
  little energy above 8 kHz, and the cost stays bounded whatever the output rate.
- Integrated loudness follows ITU-R BS.1770-4: the K-weighting filters are pyloudnorm's own (``IIRfilter``, the stages
  ``pyloudnorm.Meter`` builds), run with state across blocks; mean squares are kept per 100 ms, combined into 400 ms
  gating blocks with 75 % overlap, then gated at -70 LUFS absolute and -10 LU relative. On a whole clip it agrees with
  ``pyloudnorm.Meter.integrated_loudness`` (checked in tests/audio/test_quality.py) but never holds the signal.
- Silence is a 10 ms frame whose RMS is below ``max(peak - silence_below_peak_db, silence_floor_dbfs)``: relative
  to the file's own peak, because an absolute threshold misreads quiet or processed audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import soxr
from pyloudnorm.iirfilter import IIRfilter

from pipeline.audio.decode import nominal_seconds, output_blocks
from pipeline.formats import OutputFormat

ANALYSIS_MAX_RATE = 16000
FULL_SCALE = 32767 / 32768  # the largest positive 16-bit sample; a sample this large or larger counts as clipped
FRAME_S = 0.01  # silence frames
SUBBLOCK_S = 0.1  # loudness: 400 ms gating blocks with 75 % overlap are four 100 ms sub-blocks
GATING_SUBBLOCKS = 4
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
#: decode block length. Measured on 3 hours at 44.1 kHz: live arrays peak at ~12 MB either way, but with 10 s blocks
#: glibc's heap fragments and RSS rises 47 MB over the import baseline; with 2 s blocks, 25 MB (1 minute: 14 MB)
BLOCK_S = 2.0
DB_FLOOR = -120.0  # digital silence reads as this instead of -inf, so reports stay valid JSON
MP3_FRAME_SAMPLES = 1152


@dataclass(frozen=True)
class QualityThresholds:
    """When a measurement becomes a flag. Defaults suit converted speech."""

    max_drift_ms: float = 50.0  # |output - expected| beyond this (plus the codec allowance) is "duration_drift"
    mp3_allowance_frames: int = 2  # an mp3 without a LAME header keeps encoder delay and padding: up to a frame each
    opus_allowance_ms: float = 20.0  # one Opus frame, for encoders that round the end to a frame
    max_clipped_samples: int = 2  # a normalised peak can touch full scale once or twice; more is clipping
    min_lufs: float = -35.0  # "too_quiet" below this
    max_lufs: float = -9.0  # "too_loud" above this
    max_leading_silence_s: float = 2.0
    max_trailing_silence_s: float = 2.0
    silence_below_peak_db: float = 40.0
    silence_floor_dbfs: float = -60.0

    def drift_allowance_ms(self, fmt: OutputFormat) -> float:
        """The drift the codec itself may cause, added to ``max_drift_ms``."""
        if fmt.codec == "mp3":
            return 1000.0 * self.mp3_allowance_frames * MP3_FRAME_SAMPLES / fmt.sample_rate
        if fmt.codec == "opus":
            return self.opus_allowance_ms
        return 0.0


@dataclass(frozen=True)
class QualityReport:
    """What ``measure`` found; ``flags`` names every threshold that was crossed."""

    duration_in_s: float
    duration_out_s: float
    drift_ms: float
    lufs: float | None  # None: nothing passed the loudness gates (silence)
    peak_dbfs: float
    clipped_samples: int
    leading_silence_s: float
    trailing_silence_s: float
    flags: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_in_s": round(self.duration_in_s, 6),
            "duration_out_s": round(self.duration_out_s, 6),
            "drift_ms": round(self.drift_ms, 2),
            "lufs": None if self.lufs is None else round(self.lufs, 2),
            "peak_dbfs": round(self.peak_dbfs, 2),
            "clipped_samples": self.clipped_samples,
            "leading_silence_s": round(self.leading_silence_s, 3),
            "trailing_silence_s": round(self.trailing_silence_s, 3),
            "flags": list(self.flags),
        }


def measure(output: Path, *, output_format: OutputFormat, input_duration_s: float,
            thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Measure ``output`` (a file in ``output_format``) against the duration it should have."""
    meter = QualityMeter(output_format)
    expected_s = max(input_duration_s, nominal_seconds(output, output_format) or 0.0)
    for block in output_blocks(output, output_format, block_s=BLOCK_S, expected_s=expected_s):
        meter.add(block)
    return meter.report(input_duration_s=input_duration_s, thresholds=thresholds)


def _k_weighting(rate: int) -> np.ndarray:
    """BS.1770 K-weighting (high shelf, then high pass) as second-order sections."""
    stages = (IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"))
    return np.array([np.concatenate([stage.b, stage.a]) for stage in stages])


class _WindowSums:
    """Sums of consecutive fixed-size windows over a stream of arrays (a partial last window is dropped)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._carry = np.zeros(0)
        self._sums: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        values = np.concatenate([self._carry, values])
        whole = len(values) // self.size * self.size
        self._sums.append(values[:whole].reshape(-1, self.size).sum(axis=1).astype(np.float32))  # 4 bytes a window
        self._carry = values[whole:]

    def means(self) -> np.ndarray:
        return np.concatenate(self._sums) / np.float32(self.size) if self._sums else np.zeros(0, dtype=np.float32)


def _gated_loudness(subblock_power: np.ndarray) -> float | None:
    if len(subblock_power) < GATING_SUBBLOCKS:
        return None
    kernel = np.ones(GATING_SUBBLOCKS) / GATING_SUBBLOCKS
    blocks = np.convolve(subblock_power.astype(np.float64), kernel, mode="valid")
    loudness = -0.691 + 10.0 * np.log10(np.maximum(blocks, 1e-30))
    above_absolute = blocks[loudness >= ABSOLUTE_GATE_LUFS]
    if not len(above_absolute):
        return None
    relative_gate = -0.691 + 10.0 * math.log10(float(above_absolute.mean())) + RELATIVE_GATE_LU
    gated = blocks[(loudness > relative_gate) & (loudness >= ABSOLUTE_GATE_LUFS)]
    return -0.691 + 10.0 * math.log10(float(gated.mean()))


def _silences(frame_power: np.ndarray, duration_s: float, threshold_dbfs: float) -> tuple[float, float]:
    loud = frame_power > 10.0 ** (threshold_dbfs / 10.0)
    if not loud.any():
        return duration_s, duration_s
    first, after_last = int(loud.argmax()), len(loud) - int(loud[::-1].argmax())
    return first * FRAME_S, max(0.0, duration_s - after_last * FRAME_S)


def _db(power: float) -> float:
    return max(DB_FLOOR, 10.0 * math.log10(power)) if power > 0 else DB_FLOOR


class QualityMeter:
    """The quality figures and flags of mono float32 blocks at ``output_format``'s rate, taken as they come:
    ``measure`` feeds it a file's decode in ``BLOCK_S`` blocks, a stitched output feeds it the samples it reads back
    while they are encoded (``pipeline.audio.segments``). Memory: the running sums, not the audio.
    """

    def __init__(self, output_format: OutputFormat) -> None:
        self.output_format = output_format
        rate = output_format.sample_rate
        self._analysis_rate = min(rate, ANALYSIS_MAX_RATE)
        self._resampler = (soxr.ResampleStream(rate, self._analysis_rate, 1, dtype="float32")
                           if self._analysis_rate != rate else None)
        self._k_weighting = _k_weighting(self._analysis_rate)
        self._filter_state = np.zeros((self._k_weighting.shape[0], 2))
        self._frames = _WindowSums(round(FRAME_S * self._analysis_rate))
        self._subblocks = _WindowSums(round(SUBBLOCK_S * self._analysis_rate))
        self._samples = 0
        self._peak = 0.0
        self._clipped = 0

    def add(self, block: np.ndarray) -> None:
        """Take the next samples of the output."""
        if not len(block):
            return
        self._samples += len(block)
        self._peak = max(self._peak, float(block.max()), -float(block.min()))
        self._clipped += int(np.count_nonzero(block >= FULL_SCALE)) + int(np.count_nonzero(block <= -FULL_SCALE))
        self._analyse(self._resampler.resample_chunk(block) if self._resampler else block)

    def _analyse(self, low: np.ndarray) -> None:
        self._frames.add(np.square(low, dtype=np.float64))
        if len(low):  # a short last block can resample to nothing, and sosfilt refuses an empty array
            weighted, self._filter_state = scipy.signal.sosfilt(self._k_weighting, low, zi=self._filter_state)
            self._subblocks.add(np.square(weighted))

    def report(self, *, input_duration_s: float, thresholds: QualityThresholds = QualityThresholds()) -> QualityReport:
        """What the samples so far measure against the duration they should have (call once, after the last)."""
        if self._resampler:
            self._analyse(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        duration_out_s = self._samples / self.output_format.sample_rate
        peak_dbfs = _db(self._peak * self._peak)
        leading_s, trailing_s = _silences(
            self._frames.means(), duration_out_s,
            max(peak_dbfs - thresholds.silence_below_peak_db, thresholds.silence_floor_dbfs))
        lufs = _gated_loudness(self._subblocks.means())
        drift_ms = 1000.0 * (duration_out_s - input_duration_s)
        flags = []
        if abs(drift_ms) > thresholds.max_drift_ms + thresholds.drift_allowance_ms(self.output_format):
            flags.append("duration_drift")
        if self._clipped > thresholds.max_clipped_samples:
            flags.append("clipping")
        if lufs is None:
            flags.append("silent")
        elif lufs < thresholds.min_lufs:
            flags.append("too_quiet")
        elif lufs > thresholds.max_lufs:
            flags.append("too_loud")
        if leading_s > thresholds.max_leading_silence_s:
            flags.append("long_leading_silence")
        if trailing_s > thresholds.max_trailing_silence_s:
            flags.append("long_trailing_silence")
        return QualityReport(duration_in_s=input_duration_s, duration_out_s=duration_out_s, drift_ms=drift_ms,
                             lufs=lufs, peak_dbfs=peak_dbfs, clipped_samples=self._clipped,
                             leading_silence_s=leading_s, trailing_silence_s=trailing_s, flags=tuple(flags))
