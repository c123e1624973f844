"""Mastering: the target reached as ffmpeg's ebur128 meter reads it, true peak under the ceiling, the length kept
to the sample; the presets, a silent output, and the flags in the quality record."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.ffmpeg import encoder_args
from pipeline.audio.master import Target, master, target_for, with_mastering
from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import MasterTarget
from tests.support import write_input


def _encoded(tmp_path: Path, name: str, seconds: float = 6.0) -> Path:
    fmt = OUTPUT_FORMATS[name]
    wav = write_input(tmp_path / "in.wav", seconds, sr=fmt.sample_rate, seed=11)
    out = tmp_path / f"out.{fmt.extension}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *encoder_args(fmt), str(out)], check=True)
    return out


def _ebur128(path: Path, name: str) -> tuple[float, float]:
    fmt = OUTPUT_FORMATS[name]
    text = subprocess.run(["ffmpeg", "-nostats", "-hide_banner", *fmt.ffmpeg_input_args(), "-i", str(path), "-af",
                           "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    lufs = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", text)[-1])
    return lufs, float(re.findall(r"Peak:\s+(-?[\d.]+) dBFS", text)[-1])


def _samples(path: Path, name: str) -> int:
    fmt = OUTPUT_FORMATS[name]
    raw = subprocess.run(["ffmpeg", "-v", "error", *fmt.ffmpeg_input_args(), "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-"], check=True, capture_output=True).stdout
    return len(raw) // 2


@pytest.mark.parametrize("name", ["mp3_44100_128", "opus_48000_64", "pcm_16000"])
def test_target_reached_and_length_kept(tmp_path: Path, name: str) -> None:
    path = _encoded(tmp_path, name)
    samples = _samples(path, name)
    record = master(path, OUTPUT_FORMATS[name], Target(-16.0, -1.0), tmp_path)
    integrated, peak = _ebur128(path, name)
    assert abs(integrated + 16.0) <= 0.5 and peak <= -1.0, (integrated, peak, record)
    assert _samples(path, name) == samples
    assert record["before"]["lufs"] < -20 and abs(record["after"]["lufs"] + 16) <= 0.5 and record["flags"] == []


def test_presets_and_explicit_targets() -> None:
    assert target_for("podcast") == Target(-19.0, -1.0)  # the service's outputs are mono
    assert target_for("podcast", channels=2) == Target(-16.0, -1.0)
    assert target_for(MasterTarget(lufs=-14, true_peak_db=-2)) == Target(-14.0, -2.0)


def test_silence_is_left_alone_and_flagged(tmp_path: Path) -> None:
    wav = tmp_path / "silent.wav"
    sf.write(wav, np.zeros(16000 * 3, dtype=np.float32), 16000)
    out = tmp_path / "silent.pcm"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *encoder_args(OUTPUT_FORMATS["pcm_16000"]),
                    str(out)], check=True)
    before = out.read_bytes()
    record = master(out, OUTPUT_FORMATS["pcm_16000"], Target(-16.0, -1.0), tmp_path)
    assert record["flags"] == ["silent"] and out.read_bytes() == before


def test_flags_join_the_quality_record() -> None:
    quality = {"lufs": -16.0, "flags": ["clipping"]}
    mastering = {"flags": ["loudness_off_target"], "before": {}, "after": {}}
    merged = with_mastering(quality, mastering)
    assert merged["flags"] == ["clipping", "loudness_off_target"] and merged["mastering"] is mastering
    assert with_mastering(quality, None) is quality
