"""The ``light`` engine: a load generator that costs almost nothing, not a voice.

WORLD needs about 1.7 CPU-s per 20 s of speech, so a benchmark on a small machine measures the simulator instead of
the client. The light engine keeps everything a client can observe (decode, block plan, pacing, resampling,
encoding, headers, faults, the latency model) and replaces only the conversion of a block with a fixed gain and a
polarity flip, stretched by linear interpolation when the voice settings ask for another speed so that the output
has WORLD's length. Denoising is skipped. The output sounds like the input, quieter and inverted.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from pipeline.offline.blocks import BlockPlan

ENGINES: Final = ("world", "light")
#: -6 dB and inverted: audibly not the input, never louder than it
GAIN: Final = -0.5


def render_block(x: np.ndarray, plan: BlockPlan, index: int) -> np.ndarray:
    """Block ``index`` of the output (no overlap with its neighbours): ``GAIN * x`` over the block's span, resampled
    linearly to the block's output length when ``plan.speed`` is not 1."""
    start, end = plan.bounds[index], plan.bounds[index + 1]
    n_out = plan.out_pos(end) - plan.out_pos(start)
    span = x[start:end]
    if n_out != len(span) and len(span) > 1:
        positions = np.linspace(0.0, len(span) - 1, n_out, dtype=np.float64)
        span = np.interp(positions, np.arange(len(span)), span).astype(np.float32)
    elif n_out != len(span):
        span = np.resize(span, n_out)
    return (GAIN * span).astype(np.float32)
