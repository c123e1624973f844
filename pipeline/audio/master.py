"""Loudness mastering of an output: linear gain to the target loudness, a true-peak limiter, one re-encode.

Podcast platforms ask for -16 LUFS (stereo) or -19 LUFS (mono) integrated, true peak at most -1 dBTP; conversion
leaves an episode wherever the voice put it. A line opts in with ``master: "podcast"`` or ``master: {"lufs": L,
"true_peak_db": P}``. The outputs of the service are mono, so ``"podcast"`` means -19 LUFS for them.

How: measure the decoded output (``loudness.measure_loudness``), then decode it again, apply one linear gain, and
limit the samples whose 4x oversampled peak would pass the ceiling (a gain envelope held 4 ms on each side of a
peak and smoothed, so it never rises above what the peak needs), and encode once at the line's own format from the
float signal.
Every block keeps its samples, so the duration is exactly the unmastered one. A lossy encoder can push peaks back
up a little, so the encoded file is measured, and when it is over the ceiling or off the target it is encoded
again from the same float signal with the correction (never from the lossy file: one generation only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from pipeline.audio.decode import pcm_stream
from pipeline.audio.ffmpeg import Encoder
from pipeline.audio.loudness import measure_loudness, true_peak_envelope
from pipeline.formats import OutputFormat

PODCAST_STEREO_LUFS, PODCAST_MONO_LUFS, PODCAST_TRUE_PEAK_DB = -16.0, -19.0, -1.0
#: an output further than this from its target is flagged in the quality record
OFF_TARGET_LU = 1.0
LOOKAHEAD_S = 0.002
#: the most gain limiting may add above the plain correction; past it the output is flagged, not crushed
MAX_EXTRA_GAIN_DB = 6.0
BLOCK_S = 10.0
ATTEMPTS = 3
_FIRST_MARGIN_DB = 0.1  # below the ceiling; raised when the encoder pushes peaks over it


@dataclass(frozen=True)
class Target:
    lufs: float
    true_peak_db: float


def target_for(master: Any, *, channels: int = 1) -> Target:
    """The target a line's ``master`` names: ``"podcast"`` (by channel count) or an object with lufs/true_peak_db."""
    if master == "podcast":
        return Target(PODCAST_STEREO_LUFS if channels >= 2 else PODCAST_MONO_LUFS, PODCAST_TRUE_PEAK_DB)
    return Target(float(master.lufs), float(master.true_peak_db))


def _blocks(path: Path, fmt: OutputFormat) -> Iterator[np.ndarray]:
    return pcm_stream(path, sample_rate=fmt.sample_rate, input_args=fmt.ffmpeg_input_args(), block_s=BLOCK_S)


def _limit(x: np.ndarray, context: tuple[np.ndarray, np.ndarray], ceiling: float, window: int) -> np.ndarray:
    """``x`` with every sample's true peak under ``ceiling`` (linear); ``context`` is the signal on either side."""
    before, after = context
    extended = np.concatenate([before, x, after])
    envelope = true_peak_envelope(extended)
    need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if need.min() >= 1.0:
        return x
    # hold the lowest gain 2*window around each peak, then smooth with a window half that size: stays <= need
    held = scipy.ndimage.minimum_filter1d(need, size=4 * window + 1, mode="nearest")
    gain = scipy.ndimage.uniform_filter1d(held, size=2 * window + 1, mode="nearest")
    return (x * gain[len(before): len(before) + len(x)]).astype(np.float32)


def _mastered_blocks(path: Path, fmt: OutputFormat, gain: float, ceiling: float) -> Iterator[np.ndarray]:
    """The decoded output times ``gain``, limited; one block late, so each has the next one's start as context."""
    window = max(1, round(LOOKAHEAD_S * fmt.sample_rate))
    edge = 4 * window
    previous: np.ndarray | None = None
    tail = np.zeros(0, dtype=np.float32)
    for block in _blocks(path, fmt):
        current = (block * gain).astype(np.float32)
        if previous is not None:
            yield _limit(previous, (tail, current[:edge]), ceiling, window)
            tail = previous[-edge:]
        previous = current
    if previous is not None:
        yield _limit(previous, (tail, np.zeros(0, dtype=np.float32)), ceiling, window)


def _encode(path: Path, out: Path, fmt: OutputFormat, gain: float, ceiling: float, expected_s: float) -> None:
    with Encoder(fmt, out, what=f"the mastered {path.name}", expected_s=expected_s) as encoder:
        for block in _mastered_blocks(path, fmt, gain, ceiling):
            encoder.write(block)



def _settle_gain(path: Path, fmt: OutputFormat, aim_lufs: float, gain_db: float, ceiling: float,
                 most_db: float) -> float:
    """The gain at which the limited float signal reaches ``aim_lufs`` (limiting takes a little loudness away)."""
    for _attempt in range(ATTEMPTS):
        limited = measure_loudness(_mastered_blocks(path, fmt, 10 ** (gain_db / 20), ceiling), fmt.sample_rate)
        off = aim_lufs - (limited.lufs if limited.lufs is not None else aim_lufs)
        if abs(off) <= 0.1 or gain_db >= most_db:
            break
        gain_db = min(most_db, gain_db + off)
    return gain_db


def master(path: Path, fmt: OutputFormat, target: Target, workdir: Path) -> dict[str, Any]:
    """Master ``path`` (a file in ``fmt``) in place; return the record: target, before, after, gain, flags."""
    before = measure_loudness(_blocks(path, fmt), fmt.sample_rate)
    record: dict[str, Any] = {"target": {"lufs": target.lufs, "true_peak_db": target.true_peak_db},
                              "before": before.to_dict()}
    if before.lufs is None:  # silence stays silence: no gain can bring it to a loudness
        return {**record, "after": before.to_dict(), "gain_db": 0.0, "flags": ["silent"]}
    margin = _FIRST_MARGIN_DB
    out = workdir / f"mastered.{fmt.extension}"
    expected_s = before.samples / fmt.sample_rate
    gain_db = target.lufs - before.lufs
    after, aim = before, target.lufs
    for _attempt in range(ATTEMPTS):
        ceiling = 10 ** ((target.true_peak_db - margin) / 20)
        gain_db = _settle_gain(path, fmt, aim, gain_db, ceiling, target.lufs - before.lufs + MAX_EXTRA_GAIN_DB)
        _encode(path, out, fmt, 10 ** (gain_db / 20), ceiling, expected_s)
        after = measure_loudness(_blocks(out, fmt), fmt.sample_rate)
        over, off = after.true_peak_db - target.true_peak_db, target.lufs - (after.lufs or target.lufs)
        if over <= 0 and abs(off) <= 0.2:
            break
        # the encoder moved it (a lossy codec drops high frequencies, pushes peaks up): correct, from the same
        # float signal again, never from the encoded file
        margin += max(0.0, over + 0.2) if over > 0 else 0.0
        aim += off
    out.replace(path)
    flags = []
    if after.lufs is None or abs(after.lufs - target.lufs) > OFF_TARGET_LU:
        flags.append("loudness_off_target")
    if after.true_peak_db > target.true_peak_db:
        flags.append("true_peak_over")
    return {**record, "after": after.to_dict(), "gain_db": round(gain_db, 2), "flags": flags}


def with_mastering(quality: dict[str, Any], mastering: dict[str, Any] | None) -> dict[str, Any]:
    """The quality record with the mastering record in it and its flags among the output's."""
    if mastering is None:
        return quality
    flags = [*quality.get("flags", []), *(f for f in mastering["flags"] if f not in quality.get("flags", []))]
    return {**quality, "mastering": mastering, "flags": flags}
