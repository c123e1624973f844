"""``serve-local --engine light`` over real loopback HTTP: the vendor's formats at the input's duration, and a server
that spends under 2 % of one core per real-time stream (so a benchmark against it measures the client)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import speech_like
from pipeline.local.services import LocalStack
from pipeline.offline.voices import DEFAULT_VOICE_ID

RATE = 16000
#: server CPU seconds per second of audio converted: 2 % of one core per concurrent real-time stream
CPU_BOUND = 0.02


@pytest.fixture(scope="module")
def light_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(workdir=tmp_path_factory.mktemp("light")) as local:
        local.start_sts("--engine", "light", "--workers", "2")
        yield local


def _wav(seconds: float, seed: int = 1) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, seed=seed), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _convert(url: str, audio: bytes, output_format: str, *, stream: bool = False) -> httpx.Response:
    path = f"/v1/speech-to-speech/{DEFAULT_VOICE_ID}" + ("/stream" if stream else "")
    return httpx.post(url + path, params={"output_format": output_format}, headers={"xi-api-key": "k"},
                      files={"audio": ("in.wav", audio, "audio/wav")}, timeout=60)


def _duration_s(body: bytes, output_format: str) -> float:
    fmt = OUTPUT_FORMATS[output_format]
    if fmt.codec == "pcm":
        return len(body) / 2 / fmt.sample_rate
    info = sf.info(io.BytesIO(body))
    assert info.samplerate == fmt.sample_rate
    return info.frames / info.samplerate


def _process_cpu_s(pid: int) -> float:
    """utime + stime + reaped children's (the encoders and decoders) of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("output_format", ["mp3_44100_128", "pcm_16000", "pcm_44100", "opus_48000_64"])
@pytest.mark.parametrize("stream", [False, True])
def test_formats_and_duration(light_server: LocalStack, output_format: str, stream: bool) -> None:
    response = _convert(light_server.sts_url, _wav(6.0), output_format, stream=stream)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OUTPUT_FORMATS[output_format].content_type
    assert "character-cost" in response.headers and "request-id" in response.headers
    assert _duration_s(response.content, output_format) == pytest.approx(6.0, abs=0.08)


def test_pcm_is_the_input_quieter_and_inverted(light_server: LocalStack) -> None:
    x = speech_like(4.0, seed=3)
    body = _convert(light_server.sts_url, _wav(4.0, seed=3), "pcm_16000").content
    y = np.frombuffer(body, dtype="<i2").astype(np.float64) / 32768.0
    core = slice(800, len(x) - 800)
    assert np.corrcoef(x[core], y[core])[0, 1] < -0.99
    assert np.sqrt(np.mean(y[core] ** 2)) == pytest.approx(0.5 * np.sqrt(np.mean(x[core] ** 2)), rel=0.05)


def test_server_cpu_per_audio_second_is_under_the_bound(light_server: LocalStack) -> None:
    """12 requests of 20 s (mp3, the API's default), 4 at a time: server CPU over audio seconds < 2 %."""
    audio, jobs, seconds = _wav(20.0), 12, 20.0
    pid = light_server.service("sts").pid
    _convert(light_server.sts_url, audio, "mp3_44100_128")  # warm: imports, first ffmpeg
    before = _process_cpu_s(pid)
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _convert(light_server.sts_url, audio, "mp3_44100_128"), range(jobs)))
    time.sleep(0.3)  # let the last encoder be reaped into cutime
    used = _process_cpu_s(pid) - before
    print(f"light engine: {used:.2f} server CPU-s for {jobs * seconds:.0f} s of audio ({used / (jobs * seconds):.2%})")
    assert all(r.status_code == 200 for r in responses)
    assert used / (jobs * seconds) < CPU_BOUND, f"{used:.2f} CPU-s for {jobs * seconds:.0f} s of audio"
