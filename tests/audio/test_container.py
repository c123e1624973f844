"""Headerless outputs stored behind a WAV header open in any reader: soundfile for PCM, ffprobe for G.711."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.container import wants_wav, wrap_wav
from pipeline.formats import OUTPUT_FORMATS


def test_pcm_behind_a_wav_header_reads_back_sample_for_sample(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(24000) / 10) * 20000).astype("<i2")
    raw = tmp_path / "out.pcm"
    raw.write_bytes(samples.tobytes())
    wav = wrap_wav(raw, tmp_path / "out.wav", OUTPUT_FORMATS["pcm_24000"])
    data, rate = sf.read(wav, dtype="int16")
    assert rate == 24000 and np.array_equal(data, samples)


@pytest.mark.parametrize(("name", "codec"), [("ulaw_8000", "pcm_mulaw"), ("alaw_8000", "pcm_alaw")])
def test_g711_behind_a_wav_header_opens_with_ffprobe_without_flags(tmp_path: Path, name: str, codec: str) -> None:
    raw = tmp_path / "out.raw"
    raw.write_bytes(bytes(range(256)) * 31 + b"\x01")  # an odd byte count: the RIFF chunk is padded
    wav = wrap_wav(raw, tmp_path / "out.wav", OUTPUT_FORMATS[name])
    probed = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                        str(wav)], capture_output=True, check=True).stdout)
    stream = probed["streams"][0]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == (codec, "8000", 1)
    assert float(stream["duration"]) == pytest.approx((256 * 31 + 1) / 8000, abs=1e-3)
    assert wav.stat().st_size % 2 == 0


def test_only_headerless_formats_on_wav_keys_are_wrapped() -> None:
    assert wants_wav("a/b.WAV", OUTPUT_FORMATS["pcm_16000"]) and wants_wav("x.wav", OUTPUT_FORMATS["ulaw_8000"])
    assert not wants_wav("a/b.pcm", OUTPUT_FORMATS["pcm_16000"])
    assert not wants_wav("a/b.wav", OUTPUT_FORMATS["mp3_44100_128"])
