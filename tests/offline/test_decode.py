"""The offline server's upload decoding: WAV in process, everything else through ffmpeg, the same limits for both."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import soundfile as sf

from pipeline.offline.decode import decode_upload, decode_wav, decode_with_ffmpeg
from pipeline.offline.dsp import WORK_RATE_HZ
from pipeline.offline.problems import Problem


def _wav(seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, axis=1), rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_a_mono_wav_is_read_in_process_at_the_working_rate(rate: int) -> None:
    data = _wav(2.0, rate)
    samples = decode_wav(data, max_seconds=10)
    assert samples is not None and samples.dtype == np.float32
    assert abs(len(samples) - 2 * WORK_RATE_HZ) <= 2
    through_ffmpeg = asyncio.run(decode_with_ffmpeg(data, max_seconds=10))
    n = min(len(samples), len(through_ffmpeg))
    assert abs(len(samples) - len(through_ffmpeg)) <= 64
    assert float(np.sqrt(np.mean((samples[:n] - through_ffmpeg[:n]) ** 2))) < 0.01  # the same audio, not another


def test_an_over_long_wav_is_refused_without_reading_all_of_it() -> None:
    samples = decode_wav(_wav(5.0, 16000), max_seconds=2)
    assert samples is not None and len(samples) == 3 * WORK_RATE_HZ  # stops at the limit + 1 s
    with pytest.raises(Problem) as refused:
        asyncio.run(decode_upload(_wav(5.0, 16000), "other", max_seconds=2))
    assert refused.value.code == "audio_too_long"


def test_what_is_not_a_readable_mono_wav_goes_to_ffmpeg() -> None:
    assert decode_wav(_wav(1.0, 44100, channels=2), max_seconds=10) is None  # ffmpeg's downmix decides
    assert decode_wav(b"ID3\x04" + bytes(200), max_seconds=10) is None
    assert decode_wav(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", max_seconds=10) is None
    with pytest.raises(Problem) as refused:
        asyncio.run(decode_upload(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "other", max_seconds=10))
    assert refused.value.code == "invalid_audio"
