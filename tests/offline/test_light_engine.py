"""The light engine on the render path: WORLD's output length, resampled and encoded the same way, for a fraction of
its CPU; the samples are the input at -6 dB, inverted."""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from pipeline.formats import OUTPUT_FORMATS
from pipeline.offline import light
from pipeline.offline.blocks import plan_blocks
from pipeline.offline.dsp import WORK_RATE_HZ, Transform
from pipeline.offline.render import RenderJob, expected_output_bytes, render


def _speechish(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * WORK_RATE_HZ)) / WORK_RATE_HZ
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def _rendered(x: np.ndarray, output: str, speed: float = 1.0) -> bytes:
    job = RenderJob(samples=x, transform=Transform(speed=speed), seed=1, output=OUTPUT_FORMATS[output],
                    engine="light")

    async def collect() -> bytes:
        with ThreadPoolExecutor(1) as pool:
            return b"".join([chunk async for chunk in render(job, pool)])
    return asyncio.run(collect())


@pytest.mark.parametrize("speed", [1.0, 1.25, 0.8])
def test_blocks_have_worlds_length_and_no_overlap(speed: float) -> None:
    x = _speechish(23.0)
    plan = plan_blocks(x, speed=speed)
    out = np.concatenate([light.render_block(x, plan, i) for i in range(plan.n_blocks)])
    assert plan.n_blocks >= 2 and len(out) == plan.n_out == round(len(x) / speed)
    if speed == 1.0:
        np.testing.assert_allclose(out, light.GAIN * x, atol=1e-7)


def test_pcm_output_is_the_input_at_the_gain_inverted() -> None:
    x = _speechish(12.0)
    pcm = _rendered(x, "pcm_16000")
    assert len(pcm) == expected_output_bytes(len(x), 1.0, OUTPUT_FORMATS["pcm_16000"])
    y = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    core = slice(1000, len(x) - 1000)  # away from the resampler's edges
    np.testing.assert_allclose(y[core], light.GAIN * x[core], atol=2e-3)


@pytest.mark.parametrize("output", ["mp3_44100_128", "opus_48000_64", "pcm_44100"])
def test_encoded_formats_have_the_inputs_duration(output: str) -> None:
    x = _speechish(7.5)
    body = _rendered(x, output)
    fmt = OUTPUT_FORMATS[output]
    if fmt.codec == "pcm":
        seconds = len(body) / 2 / fmt.sample_rate
    else:
        info = sf.info(io.BytesIO(body))
        assert info.samplerate == fmt.sample_rate
        seconds = info.frames / info.samplerate
    assert seconds == pytest.approx(7.5, abs=0.08)


def test_light_costs_a_small_share_of_world() -> None:
    """The conversion itself (no encoder): 20 s of audio in well under 20 ms of CPU."""
    x = _speechish(20.0)
    plan = plan_blocks(x)
    started = time.process_time()
    for _ in range(5):
        for i in range(plan.n_blocks):
            light.render_block(x, plan, i)
    assert (time.process_time() - started) / 5 < 0.02
