"""Quality metrics on outputs with known content: loudness, peak, clipping, silences, duration drift."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest

from pipeline.audio.quality import QualityThresholds, measure
from pipeline.formats import OUTPUT_FORMATS, OutputFormat
from pipeline.local.samples import speech_like

PCM_16K = OUTPUT_FORMATS["pcm_16000"]


def write_pcm(path: Path, x: np.ndarray) -> Path:
    np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tofile(path)
    return path


def encode(pcm: Path, fmt: OutputFormat, out: Path) -> Path:
    codec = {"mp3": ["-c:a", "libmp3lame", "-b:a", f"{fmt.bitrate_kbps}k"],
             "opus": ["-c:a", "libopus", "-b:a", f"{fmt.bitrate_kbps}k", "-f", "ogg"],
             "ulaw": ["-c:a", "pcm_mulaw", "-f", "mulaw"]}[fmt.codec]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", "16000", "-ac", "1",
                    "-i", str(pcm), "-ar", str(fmt.sample_rate), *codec, str(out)], check=True)
    return out


def sine(seconds: float, amplitude: float, rate: int = 16000, freq_hz: float = 1000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * rate)) / rate)


def trimmed_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio that starts and ends with sound (the generator ends phrases with a pause)."""
    x = speech_like(seconds, 16000, seed=seed).astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0]: loud[-1] + 1]


def test_a_minus_20_dbfs_sine_reads_minus_23_lufs(tmp_path: Path) -> None:
    # BS.1770: a full-scale 1 kHz sine reads -3.01 LUFS, so a peak of -20 dBFS reads -23.01
    report = measure(write_pcm(tmp_path / "sine.pcm", sine(5.0, 0.1)), output_format=PCM_16K, input_duration_s=5.0)
    assert report.lufs == pytest.approx(-23.01, abs=0.1)
    assert report.peak_dbfs == pytest.approx(-20.0, abs=0.01)
    assert (report.clipped_samples, report.flags, report.drift_ms) == (0, (), 0.0)


def test_a_44k_output_is_measured_the_same_after_resampling(tmp_path: Path) -> None:
    out = tmp_path / "sine.pcm"
    write_pcm(out, sine(5.0, 0.1, rate=44100))
    report = measure(out, output_format=OUTPUT_FORMATS["pcm_44100"], input_duration_s=5.0)
    assert report.lufs == pytest.approx(-23.01, abs=0.1)
    assert report.duration_out_s == 5.0


def test_loudness_matches_pyloudnorm_on_speech(tmp_path: Path) -> None:
    out = write_pcm(tmp_path / "speech.pcm", speech_like(30.0, 16000, seed=4))
    samples = np.fromfile(out, dtype="<i2") / 32768.0
    expected = pyloudnorm.Meter(16000).integrated_loudness(samples)
    report = measure(out, output_format=PCM_16K, input_duration_s=30.0)
    assert report.lufs == pytest.approx(expected, abs=0.05)


def test_clipping_is_counted_and_flagged(tmp_path: Path) -> None:
    x = np.clip(sine(2.0, 1.6, freq_hz=250.0), -1.0, 1.0)
    report = measure(write_pcm(tmp_path / "clipped.pcm", x), output_format=PCM_16K, input_duration_s=2.0)
    expected = int(np.count_nonzero(np.abs(x) >= 1.0))
    assert report.clipped_samples == expected > 1000
    assert report.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert "clipping" in report.flags and "too_loud" in report.flags


def test_silence_padding_is_measured_within_20_ms(tmp_path: Path) -> None:
    x = np.concatenate([np.zeros(16000), trimmed_speech(6.0), np.zeros(24000)])
    report = measure(write_pcm(tmp_path / "padded.pcm", x), output_format=PCM_16K, input_duration_s=len(x) / 16000)
    assert report.leading_silence_s == pytest.approx(1.0, abs=0.02)
    assert report.trailing_silence_s == pytest.approx(1.5, abs=0.02)
    assert report.flags == ()


def test_long_silences_a_quiet_output_and_drift_are_flagged(tmp_path: Path) -> None:
    x = 0.05 * np.concatenate([np.zeros(40000), trimmed_speech(4.0), np.zeros(48000)])  # about -45 LUFS
    out = write_pcm(tmp_path / "quiet.pcm", x)
    report = measure(out, output_format=PCM_16K, input_duration_s=len(x) / 16000 + 0.2)
    assert report.leading_silence_s == pytest.approx(2.5, abs=0.02)
    assert report.drift_ms == pytest.approx(-200.0)
    assert set(report.flags) == {"long_leading_silence", "long_trailing_silence", "too_quiet", "duration_drift"}


def test_digital_silence_is_silent_and_still_valid_json(tmp_path: Path) -> None:
    report = measure(write_pcm(tmp_path / "zeros.pcm", np.zeros(32000)), output_format=PCM_16K, input_duration_s=2.0)
    assert report.lufs is None and report.peak_dbfs == -120.0
    assert report.leading_silence_s == report.trailing_silence_s == 2.0
    assert "silent" in report.flags
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["lufs"] is None


@pytest.mark.parametrize("name", ["mp3_44100_128", "mp3_22050_32", "opus_48000_64", "ulaw_8000"])
def test_encoded_outputs_keep_their_duration(tmp_path: Path, name: str) -> None:
    fmt = OUTPUT_FORMATS[name]
    pcm = write_pcm(tmp_path / "speech.pcm", speech_like(12.0, 16000, seed=2))
    out = encode(pcm, fmt, tmp_path / f"out.{fmt.extension}")
    report = measure(out, output_format=fmt, input_duration_s=12.0)
    assert abs(report.drift_ms) <= 1000.0 / fmt.sample_rate  # ffmpeg's encoders record delay and padding
    assert report.flags == ()
    # libmp3lame's output is uniformly 0.45 dB quieter (x 0.95, measured at every frequency); the others within 0.1
    tolerance_lu = 0.5 if fmt.codec == "mp3" else 0.1
    lufs_in = measure(pcm, output_format=PCM_16K, input_duration_s=12.0).lufs
    assert report.lufs == pytest.approx(lufs_in, abs=tolerance_lu)


def test_the_codec_allowance_widens_the_drift_threshold() -> None:
    thresholds = QualityThresholds()
    assert thresholds.drift_allowance_ms(OUTPUT_FORMATS["pcm_16000"]) == 0.0
    assert thresholds.drift_allowance_ms(OUTPUT_FORMATS["mp3_22050_32"]) == pytest.approx(104.49, abs=0.01)
    assert thresholds.drift_allowance_ms(OUTPUT_FORMATS["opus_48000_32"]) == 20.0
