"""One conversion from decoded input to encoded bytes, produced block by block off the event loop.

Denoising (if asked), planning and every block's conversion run in the server's thread pool (WORLD, soxr and
RNNoise release the GIL, so blocks of concurrent requests really run in parallel); resampling to the output rate is
one continuous soxr stream, so block joins leave no trace in the output. ``pace`` is awaited before each block is
handed to the encoder with the share of the input done so far: the latency fault knobs use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import soxr

from pipeline.formats import OutputFormat
from pipeline.offline import blocks as blocking
from pipeline.offline import light
from pipeline.offline.denoise import denoise
from pipeline.offline.dsp import WORK_RATE_HZ, Transform
from pipeline.offline.encode import encode

Pace = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RenderJob:
    """What to convert and how."""

    samples: np.ndarray  # float32 mono at WORK_RATE_HZ
    transform: Transform
    seed: int
    output: OutputFormat
    remove_background_noise: bool = False
    first_block_s: float = blocking.BLOCK_S
    #: ``world`` (the voice conversion) or ``light`` (a near-free load generator, see ``light``)
    engine: str = "world"


async def _converted(job: RenderJob, executor: Executor, pace: Pace | None) -> AsyncGenerator[np.ndarray, None]:
    loop = asyncio.get_running_loop()
    x = job.samples
    if job.engine == "light":
        async for out in _light(job, pace):
            yield out
        return
    if job.remove_background_noise:
        x = await loop.run_in_executor(executor, denoise, x, WORK_RATE_HZ)
    plan = await loop.run_in_executor(executor, lambda: blocking.plan_blocks(
        x, speed=job.transform.speed, first_block_s=job.first_block_s))
    stitcher = blocking.Stitcher(plan.fade)
    resampler = soxr.ResampleStream(WORK_RATE_HZ, job.output.sample_rate, 1, dtype="float32")
    for index in range(plan.n_blocks):
        last = index == plan.n_blocks - 1
        rendered = await loop.run_in_executor(executor, blocking.render_block, x, plan, index, job.transform,
                                              job.seed)
        joined = stitcher.push(rendered, last).astype(np.float32)
        out = await loop.run_in_executor(executor, resampler.resample_chunk, joined, last)
        if pace is not None:
            await pace(plan.done_fraction(index))
        yield out


async def _light(job: RenderJob, pace: Pace | None) -> AsyncGenerator[np.ndarray, None]:
    """The light engine's blocks: the same plan, pacing and resampling as WORLD's, done inline (each block costs
    microseconds, less than a hand-off to the thread pool)."""
    plan = blocking.plan_blocks(job.samples, speed=job.transform.speed, first_block_s=job.first_block_s)
    resampler = soxr.ResampleStream(WORK_RATE_HZ, job.output.sample_rate, 1, dtype="float32")
    for index in range(plan.n_blocks):
        last = index == plan.n_blocks - 1
        out = resampler.resample_chunk(light.render_block(job.samples, plan, index), last)
        if pace is not None:
            await pace(plan.done_fraction(index))
        yield out


async def render(job: RenderJob, executor: Executor, pace: Pace | None = None) -> AsyncGenerator[bytes, None]:
    """The encoded output of ``job``, chunk by chunk; closing this generator stops the work that is left."""
    converted = _converted(job, executor, pace)
    encoded = encode(converted, job.output)
    try:
        async for chunk in encoded:
            yield chunk
    finally:
        await encoded.aclose()
        await converted.aclose()


def expected_output_bytes(n_in: int, speed: float, output: OutputFormat) -> int:
    """About how many bytes the encoded output of ``n_in`` input samples has (exact for pcm, μ-law and A-law)."""
    seconds = round(n_in / speed) / WORK_RATE_HZ
    if output.codec == "pcm":
        return 2 * round(seconds * output.sample_rate)
    if output.bitrate_kbps is None:
        return round(seconds * output.sample_rate)
    return int(seconds * output.bitrate_kbps * 125)
