"""Probing and limits of inputs, with real ffprobe on small generated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.decode import duration_s
from pipeline.audio.prepare import prepare
from pipeline.audio.probe import AudioInfo, check_limits, probe
from pipeline.errors import InputError
from tests.audio.helpers import RATE, SECONDS, ffmpeg


def test_probe_reads_wav_mp3_flac(files: dict[str, Path]) -> None:
    wav, mp3, flac = probe(files["wav"]), probe(files["mp3"]), probe(files["flac"])
    assert (wav.codec, wav.format_name, wav.sample_rate, wav.channels) == ("pcm_s16le", "wav", RATE, 1)
    assert wav.duration_s == pytest.approx(SECONDS, abs=1e-6)
    assert (flac.codec, flac.sample_rate) == ("flac", RATE)
    assert flac.duration_s == pytest.approx(SECONDS, abs=1e-6)
    # the Xing header's duration counts the encoder delay and padding that the decoder drops
    assert (mp3.codec, mp3.bit_rate) == ("mp3", 128000)
    assert SECONDS <= mp3.duration_s < SECONDS + 0.06
    assert not mp3.duration_estimated
    assert wav.size_bytes == files["wav"].stat().st_size


def test_probe_of_raw_pcm_takes_the_duration_from_the_size(files: dict[str, Path]) -> None:
    info = probe(files["pcm"], file_format="pcm_s16le_16")
    assert info == AudioInfo(duration_s=SECONDS, codec="pcm_s16le", sample_rate=16000, channels=1,
                             format_name="s16le", size_bytes=int(SECONDS * 16000 * 2), bit_rate=256000,
                             header_duration_s=SECONDS, counted=True)  # its size is its sample count
    assert info.is_raw_pcm


def test_a_wav_declared_raw_is_probed_as_wav(files: dict[str, Path]) -> None:
    assert probe(files["wav"], file_format="pcm_s16le_16").format_name == "wav"


def test_raw_pcm_with_an_odd_byte_count_is_corrupt(tmp_path: Path) -> None:
    odd = tmp_path / "odd.pcm"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError) as caught:
        probe(odd, file_format="pcm_s16le_16")
    assert caught.value.reason == "corrupt_audio"


def test_an_extension_that_lies_does_not_matter(files: dict[str, Path], tmp_path: Path) -> None:
    liar = tmp_path / "really-an-mp3.wav"
    liar.write_bytes(files["mp3"].read_bytes())
    info = probe(liar)
    assert (info.codec, info.format_name) == ("mp3", "mp3")
    assert duration_s(liar) == pytest.approx(SECONDS, abs=1e-6)


def test_zero_bytes_is_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        probe(empty, label="s3://in/empty.wav")
    assert caught.value.reason == "empty_input"
    assert "s3://in/empty.wav" in caught.value.message


def test_a_wav_with_no_samples_is_empty_input_when_counted(tmp_path: Path) -> None:
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0), 16000)
    info = probe(header_only, label="s3://in/header.wav")
    assert not info.counted
    with pytest.raises(InputError) as caught:
        prepare(header_only, info, "other", tmp_path, label="s3://in/header.wav")
    assert caught.value.reason == "empty_input"


def test_a_missing_file_is_missing_input(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        probe(tmp_path / "nope.wav")
    assert caught.value.reason == "missing_input"


def test_text_is_not_audio(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp3"
    text.write_text("these are meeting notes, not a recording\n" * 20)
    with pytest.raises(InputError) as caught:
        probe(text, label="s3://in/notes.mp3")
    assert caught.value.reason == "not_audio"
    assert caught.value.message.startswith("input s3://in/notes.mp3 is not audio: ffprobe cannot read it, as its "
                                           "first bytes are no audio container the decoder accepts (text)")
    assert str(tmp_path) not in caught.value.message


def test_a_png_is_not_audio_and_the_message_says_what_it_looks_like(tmp_path: Path) -> None:
    png = tmp_path / "cover.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=32x32:d=1", "-frames:v", "1", "-c:v", "png", "-f", "image2", str(png))
    with pytest.raises(InputError) as caught:
        probe(png, label="s3://in/cover.wav")
    assert caught.value.reason == "not_audio"
    assert caught.value.message.startswith("input s3://in/cover.wav is not audio: ffprobe found no audio stream "
                                           "(it looks like png_pipe); only audio containers are decoded")


def test_limits(files: dict[str, Path]) -> None:
    info = probe(files["wav"])
    check_limits(info, max_bytes=info.size_bytes, max_seconds=SECONDS, label="s3://in/a.wav")
    with pytest.raises(InputError) as big:
        check_limits(info, max_bytes=info.size_bytes - 1, max_seconds=60.0, label="s3://in/a.wav")
    assert big.value.reason == "too_large" and "s3://in/a.wav" in big.value.message
    with pytest.raises(InputError) as long:
        check_limits(info, max_bytes=10**9, max_seconds=2.5, label="s3://in/a.wav")
    assert long.value.reason == "too_long" and "3.0 s" in long.value.message
