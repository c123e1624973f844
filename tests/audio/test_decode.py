"""Decoding in bounded memory: exact durations, blocks that join to the whole, decoders that stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.decode import duration_s, output_duration_s, pcm_stream
from pipeline.audio.quality import measure
from pipeline.errors import InputError
from pipeline.formats import OUTPUT_FORMATS
from tests.audio.helpers import RATE, SECONDS, decoded, ffmpeg

PCM_ARGS = OUTPUT_FORMATS["pcm_16000"].ffmpeg_input_args()


def test_decoded_durations_are_exact(files: dict[str, Path]) -> None:
    assert duration_s(files["wav"]) == SECONDS
    assert duration_s(files["mp3"]) == SECONDS  # LAME's header lets ffmpeg drop delay and padding exactly
    assert duration_s(files["pcm"], input_args=PCM_ARGS) == SECONDS


def test_the_whole_decode_and_small_blocks_agree(files: dict[str, Path]) -> None:
    whole = decoded(files["stereo"], sample_rate=16000)
    blocks = list(pcm_stream(files["stereo"], sample_rate=16000, block_s=0.25))
    assert [len(b) for b in blocks[:-1]] == [4000] * (len(blocks) - 1)
    assert np.array_equal(np.concatenate(blocks), whole)
    assert len(whole) == SECONDS * 16000 and whole.dtype == np.float32
    # stereo is mixed down to the mean of the channels (here 0.75 x the left one), never amplified
    mono = decoded(files["wav"], sample_rate=16000)
    assert np.abs(whole - 0.75 * mono).max() < 1e-4


def test_a_stream_closed_early_stops_its_decoder(files: dict[str, Path]) -> None:
    stream = pcm_stream(files["wav"], sample_rate=RATE, block_s=0.1)
    first = next(stream)
    stream.close()
    assert len(first) == 4410


def test_garbage_is_refused_before_ffmpeg_sees_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x13\x37" * 5000)
    with pytest.raises(InputError) as caught:
        decoded(junk, sample_rate=16000)
    assert caught.value.reason == "not_audio"


def test_an_audio_container_that_does_not_decode_is_corrupt(tmp_path: Path) -> None:
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + b"\x13\x37" * 5000)  # the magic is right, what follows is not FLAC
    with pytest.raises(InputError) as caught:
        decoded(broken, sample_rate=16000)
    assert caught.value.reason == "corrupt_audio"


@pytest.mark.parametrize("name", ["pcm_16000", "mp3_44100_128", "ulaw_8000"])
def test_output_duration_counts_what_the_quality_measure_counts(files: dict[str, Path], tmp_path: Path,
                                                               name: str) -> None:
    fmt = OUTPUT_FORMATS[name]
    out = tmp_path / f"out.{fmt.extension}"
    ffmpeg("-i", str(files["wav"]), "-map_metadata", "-1", "-ac", "1", "-ar", str(fmt.sample_rate),
           *{"pcm": ["-f", "s16le"], "mp3": ["-c:a", "libmp3lame"], "ulaw": ["-f", "mulaw"]}[fmt.codec], str(out))
    assert output_duration_s(out, fmt) == measure(out, output_format=fmt, input_duration_s=SECONDS).duration_out_s
