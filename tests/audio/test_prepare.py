"""Preparing inputs for the service: what is sent as is, what is transcoded, what is refused as damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.prepare import prepare, resample_mono
from pipeline.audio.probe import probe
from pipeline.errors import InputError
from tests.audio.helpers import RATE, SECONDS, ffmpeg


def test_a_truncated_mp3_is_corrupt(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["mp3"].read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2 + 101])  # mid-frame
    info = probe(cut)  # ffprobe still trusts the Xing header's length
    assert info.duration_s > SECONDS
    with pytest.raises(InputError) as caught:
        prepare(cut, info, "other", tmp_path, label="s3://in/cut.mp3")
    assert caught.value.reason == "corrupt_audio"
    assert "s3://in/cut.mp3 is cut off" in caught.value.message
    with pytest.raises(InputError, match="cut off"):
        prepare(cut, info, "pcm_s16le_16", tmp_path)


def test_a_truncated_mp3_without_a_length_header_cannot_be_told_from_a_short_one(files: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp3"
    ffmpeg("-i", str(files["wav"]), "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", str(plain))
    cut = tmp_path / "plain-cut.mp3"
    cut.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    info = probe(cut)
    assert info.duration_estimated
    assert prepare(cut, info, "other", tmp_path) == cut  # documented: accepted as a shorter recording


def test_six_channels_are_prepared_as_mono_flac(files: dict[str, Path], tmp_path: Path) -> None:
    info = probe(files["six"])
    assert info.channels == 6
    prepared = prepare(files["six"], info, "other", tmp_path)
    out = sf.info(str(prepared))
    assert (out.format, out.channels, out.samplerate, out.frames) == ("FLAC", 1, RATE, int(SECONDS * RATE))
    # the downmix is normalised: six equal channels at most 0.7 x speech do not add up past that
    assert np.abs(sf.read(prepared)[0]).max() <= 0.7 * np.abs(sf.read(files["wav"])[0]).max() + 1e-3


def test_mono_and_stereo_inputs_are_sent_as_they_are(files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("wav", "stereo", "mp3", "flac"):
        assert prepare(files[name], probe(files[name]), "other", tmp_path) == files[name]


def test_raw_pcm_for_other_gets_a_header(files: dict[str, Path], tmp_path: Path) -> None:
    prepared = prepare(files["pcm"], probe(files["pcm"], file_format="pcm_s16le_16"), "other", tmp_path)
    assert np.array_equal(sf.read(prepared, dtype="int16")[0], np.fromfile(files["pcm"], dtype="<i2"))


@pytest.mark.parametrize("name", ["wav", "stereo", "mp3", "six"])
def test_prepare_pcm_gives_exact_16k_mono_s16le(files: dict[str, Path], tmp_path: Path, name: str) -> None:
    prepared = prepare(files[name], probe(files[name]), "pcm_s16le_16", tmp_path)
    assert prepared.suffix == ".pcm"
    assert prepared.stat().st_size == int(SECONDS * 16000) * 2
    info = probe(prepared, file_format="pcm_s16le_16")
    assert info.duration_s == SECONDS


def test_prepare_pcm_keeps_a_raw_input(files: dict[str, Path], tmp_path: Path) -> None:
    info = probe(files["pcm"], file_format="pcm_s16le_16")
    assert prepare(files["pcm"], info, "pcm_s16le_16", tmp_path) == files["pcm"]


def test_resample_mono_writes_the_rate_and_container_asked_for(files: dict[str, Path], tmp_path: Path) -> None:
    out = resample_mono(files["stereo"], tmp_path / "sample.wav", sample_rate=16000)
    info = sf.info(str(out))
    assert (info.format, info.channels, info.samplerate, info.frames) == ("WAV", 1, 16000, int(SECONDS * 16000))
