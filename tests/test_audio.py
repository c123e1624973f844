"""Probing, limits, preparation and decoding of inputs, with real ffmpeg on small generated files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.ffmpeg import (
    AudioInfo,
    check_limits,
    decode_mono,
    duration_s,
    pcm_stream,
    prepare,
    probe,
)
from pipeline.errors import InputError
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import speech_like

RATE = 44100
SECONDS = 3.0
PCM_ARGS = OUTPUT_FORMATS["pcm_16000"].ffmpeg_input_args()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    x = speech_like(SECONDS, RATE, seed=1)
    out = {"wav": d / "speech.wav", "stereo": d / "stereo.wav", "six": d / "six.wav"}
    sf.write(out["wav"], x, RATE, subtype="PCM_16")
    sf.write(out["stereo"], np.stack([x, 0.5 * x], axis=1), RATE, subtype="PCM_16")
    sf.write(out["six"], np.stack([x * (0.2 + 0.1 * c) for c in range(6)], axis=1), RATE, subtype="PCM_16")
    out["flac"] = d / "speech.flac"
    sf.write(out["flac"], x, RATE, subtype="PCM_16")
    out["mp3"] = d / "speech.mp3"
    ffmpeg("-i", str(out["wav"]), "-c:a", "libmp3lame", "-b:a", "128k", str(out["mp3"]))
    out["pcm"] = d / "speech.pcm"
    ffmpeg("-i", str(out["wav"]), "-ar", "16000", "-f", "s16le", str(out["pcm"]))
    return out


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
                             format_name="s16le", size_bytes=int(SECONDS * 16000 * 2), bit_rate=256000)
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


def test_a_wav_with_no_samples_is_empty_input(tmp_path: Path) -> None:
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0), 16000)
    with pytest.raises(InputError) as caught:
        probe(header_only, label="s3://in/header.wav")
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
    assert caught.value.message.startswith("input s3://in/notes.mp3 is not audio: ffprobe cannot read it")
    assert str(tmp_path) not in caught.value.message


def test_a_png_is_not_audio_and_the_message_says_what_it_looks_like(tmp_path: Path) -> None:
    png = tmp_path / "cover.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=32x32:d=1", "-frames:v", "1", "-c:v", "png", "-f", "image2", str(png))
    with pytest.raises(InputError) as caught:
        probe(png, label="s3://in/cover.wav")
    assert caught.value.reason == "not_audio"
    assert caught.value.message == ("input s3://in/cover.wav is not audio: ffprobe found no audio stream "
                                    "(it looks like png_pipe)")


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


def test_limits(files: dict[str, Path]) -> None:
    info = probe(files["wav"])
    check_limits(info, max_bytes=info.size_bytes, max_seconds=SECONDS, label="s3://in/a.wav")
    with pytest.raises(InputError) as big:
        check_limits(info, max_bytes=info.size_bytes - 1, max_seconds=60.0, label="s3://in/a.wav")
    assert big.value.reason == "too_large" and "s3://in/a.wav" in big.value.message
    with pytest.raises(InputError) as long:
        check_limits(info, max_bytes=10**9, max_seconds=2.5, label="s3://in/a.wav")
    assert long.value.reason == "too_long" and "3.0 s" in long.value.message


def test_decoded_durations_are_exact(files: dict[str, Path]) -> None:
    assert duration_s(files["wav"]) == SECONDS
    assert duration_s(files["mp3"]) == SECONDS  # LAME's header lets ffmpeg drop delay and padding exactly
    assert duration_s(files["pcm"], input_args=PCM_ARGS) == SECONDS


def test_decode_mono_and_the_stream_agree(files: dict[str, Path]) -> None:
    whole = decode_mono(files["stereo"], sample_rate=16000)
    blocks = list(pcm_stream(files["stereo"], sample_rate=16000, block_s=0.25))
    assert [len(b) for b in blocks[:-1]] == [4000] * (len(blocks) - 1)
    assert np.array_equal(np.concatenate(blocks), whole)
    assert len(whole) == SECONDS * 16000 and whole.dtype == np.float32
    # stereo is mixed down to the mean of the channels (here 0.75 x the left one), never amplified
    mono = decode_mono(files["wav"], sample_rate=16000)
    assert np.abs(whole - 0.75 * mono).max() < 1e-4


def test_a_stream_closed_early_stops_its_decoder(files: dict[str, Path]) -> None:
    stream = pcm_stream(files["wav"], sample_rate=RATE, block_s=0.1)
    first = next(stream)
    stream.close()
    assert len(first) == 4410


def test_decoding_garbage_raises_corrupt_audio(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x13\x37" * 5000)
    with pytest.raises(InputError) as caught:
        decode_mono(junk, sample_rate=16000)
    assert caught.value.reason == "corrupt_audio"
