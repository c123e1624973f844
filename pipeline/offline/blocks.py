"""Long inputs are converted in blocks so a stream can start before the whole input is done.

Blocks are about 10 s long and cut at the quietest 20 ms frame near each nominal boundary. Each block is analysed
with 0.3 s of context on both sides (so WORLD sees whole syllables at its edges), converted, loudness-matched to its
own input span, and joined to its neighbour with a 5 ms linear crossfade. Every block draws its random variation from
``(seed, block index)``, so the result is the same however the blocks are scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.offline import dsp
from pipeline.offline.level import match_gain

BLOCK_S = 10.0
SEARCH_S = 2.0
MARGIN_S = 0.3
FADE_S = 0.005
#: no block shorter than this, and no final block shorter than this either
MIN_BLOCK_S = 1.0
_FRAME_S = 0.02


@dataclass(frozen=True)
class BlockPlan:
    """Block boundaries in input samples (``bounds[0] == 0``, ``bounds[-1] == n_in``) and the time stretch."""

    bounds: tuple[int, ...]
    speed: float = 1.0
    rate_hz: int = dsp.WORK_RATE_HZ

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    @property
    def n_in(self) -> int:
        return self.bounds[-1]

    def out_pos(self, in_pos: int) -> int:
        """Where an input sample position lands in the output."""
        return round(in_pos / self.speed)

    @property
    def n_out(self) -> int:
        return self.out_pos(self.n_in)

    @property
    def fade(self) -> int:
        return round(FADE_S * self.rate_hz)

    def done_fraction(self, index: int) -> float:
        """Share of the input covered once block ``index`` is out."""
        return self.bounds[index + 1] / self.n_in if self.n_in else 1.0


def plan_blocks(x: np.ndarray, *, speed: float = 1.0, first_block_s: float = BLOCK_S, block_s: float = BLOCK_S,
                rate_hz: int = dsp.WORK_RATE_HZ) -> BlockPlan:
    """Cut ``x`` into blocks at quiet frames: the first about ``first_block_s`` long, the rest about ``block_s``."""
    n = len(x)
    frame = int(_FRAME_S * rate_hz)
    min_block = int(MIN_BLOCK_S * rate_hz)
    bounds = [0]
    length_s = first_block_s
    while True:
        target = bounds[-1] + int(length_s * rate_hz)
        search = int(min(SEARCH_S, length_s / 4) * rate_hz)
        lo, hi = max(bounds[-1] + min_block, target - search), min(n - min_block, target + search)
        if hi - lo < frame:
            break
        n_frames = (hi - lo) // frame
        energy = np.square(x[lo:lo + n_frames * frame], dtype=np.float64).reshape(n_frames, frame).sum(axis=1)
        bounds.append(lo + int(np.argmin(energy)) * frame + frame // 2)
        length_s = block_s
    bounds.append(n)
    return BlockPlan(tuple(bounds), speed, rate_hz)


def render_block(x: np.ndarray, plan: BlockPlan, index: int, transform: dsp.Transform, seed: int) -> np.ndarray:
    """Convert block ``index``: output samples from its start minus the fade to its end plus the fade (clipped to
    the output), loudness-matched to the block's input span."""
    start, end = plan.bounds[index], plan.bounds[index + 1]
    margin = int(MARGIN_S * plan.rate_hz)
    seg_lo, seg_hi = max(0, start - margin), min(plan.n_in, end + margin)
    rng = np.random.default_rng([seed, index])
    y = dsp.convert(x[seg_lo:seg_hi], transform, rng, plan.rate_hz)
    out_lo = plan.out_pos(start) - plan.fade if index > 0 else 0
    out_hi = plan.out_pos(end) + plan.fade if index < plan.n_blocks - 1 else plan.n_out
    offset = out_lo - plan.out_pos(seg_lo)
    block = dsp.fit_length(y[offset:], out_hi - out_lo)
    return block * match_gain(x[start:end], block, plan.rate_hz)


class Stitcher:
    """Joins rendered blocks in order, crossfading the ``2 * fade`` samples where neighbours overlap."""

    def __init__(self, fade: int) -> None:
        self._overlap = 2 * fade
        ramp = (np.arange(self._overlap) + 0.5) / max(1, self._overlap)
        self._fade_in, self._fade_out = ramp, 1.0 - ramp
        self._tail: np.ndarray | None = None

    def push(self, block: np.ndarray, last: bool) -> np.ndarray:
        """The samples that are final once ``block`` is known (everything but its own tail, unless it is last)."""
        if self._tail is not None:
            block = block.copy()
            block[:self._overlap] = self._tail * self._fade_out + block[:self._overlap] * self._fade_in
        if last or self._overlap == 0:
            self._tail = None
            return block
        self._tail = block[-self._overlap:]
        return block[:-self._overlap]
