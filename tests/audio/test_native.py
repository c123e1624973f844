"""In-process probing and decoding (``pipeline.audio.native``) against the ffmpeg path it stands in for: the same
header fields, counts, refusals and quality figures, with no process started; and every case it leaves to ffmpeg."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import native
from pipeline.audio.decode import output_blocks, output_duration_s
from pipeline.audio.prepare import prepare
from pipeline.audio.probe import check_limits, probe
from pipeline.audio.quality import measure
from pipeline.errors import InputError
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import speech_like
from tests.audio.helpers import RATE, SECONDS, decoded, record_argvs
from tests.audio.helpers import ffmpeg as make


def _by_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on every probe, count and decode goes the ffmpeg way (the fallback)."""
    for name in ("read_header", "count_wav_s", "output_samples", "output_blocks"):
        monkeypatch.setattr(native, name, lambda *args, **kwargs: None)


def _both(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> tuple[object, object, list[list[str]]]:
    """``run()`` in process (and the command lines it started), then the same by ffmpeg."""
    with monkeypatch.context() as patched:
        seen = record_argvs(patched)
        here = run()
    with monkeypatch.context() as patched:
        _by_ffmpeg(patched)
        there = run()
    return here, there, seen


@pytest.fixture(scope="module")
def inputs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The package's inputs plus WAVs as other writers make them: 24-bit and float (WAVEXTENSIBLE by ffmpeg, with a
    LIST chunk), 8-bit."""
    d = tmp_path_factory.mktemp("native-inputs")
    made = {name: files[name] for name in ("wav", "stereo", "six", "flac")}
    for name, args in {"s24": ["-c:a", "pcm_s24le"], "f32": ["-c:a", "pcm_f32le"], "u8": ["-c:a", "pcm_u8"]}.items():
        made[name] = d / f"{name}.wav"
        make("-i", str(files["wav"]), *args, str(made[name]))
    return made


@pytest.mark.parametrize("name", ["wav", "stereo", "six", "flac", "s24", "f32", "u8"])
def test_a_header_read_in_process_says_what_ffprobe_says(inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                         name: str) -> None:
    here, there, seen = _both(monkeypatch, lambda: probe(inputs[name]))
    assert seen == []
    assert here == there  # codec, rate, channels, container, bitrate, the header's claim, estimated or not


@pytest.mark.parametrize("name", ["wav", "stereo", "s24", "f32", "u8"])
def test_a_wav_is_counted_in_process_to_the_sample(inputs: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def counted() -> object:
        info = probe(inputs[name])
        check_limits(info, max_bytes=10**9, max_seconds=SECONDS, label=name)
        assert prepare(inputs[name], info, "other", tmp_path) == inputs[name]
        return info

    here, there, seen = _both(monkeypatch, counted)
    assert seen == []
    assert here == there
    assert here.counted and here.duration_s == SECONDS  # type: ignore[attr-defined]


def test_a_long_wav_is_stopped_just_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(40 * 16000, dtype=np.int16), 16000)
    messages = []
    for force_ffmpeg in (False, True):
        with monkeypatch.context() as patched:
            if force_ffmpeg:
                _by_ffmpeg(patched)
            info = probe(long, label="s3://in/long.wav")
            info.max_seconds = 30.0  # as if its header had said less (check_limits would refuse 40 s already)
            with pytest.raises(InputError) as caught:
                prepare(long, info, "other", tmp_path, label="s3://in/long.wav")
            assert caught.value.reason == "too_long" and not info.counted
            messages.append(caught.value.message)
    assert messages[0] == messages[1]
    assert "decoding was stopped at 31.0 s" in messages[0]


def test_a_wav_with_a_partial_last_sample_is_left_to_ffmpeg_which_calls_it_damaged(files: dict[str, Path],
                                                                                    tmp_path: Path) -> None:
    data = files["wav"].read_bytes()
    odd = tmp_path / "odd.wav"
    odd.write_bytes(data[:len(data) // 2 + 1])
    assert native.read_header(odd) is None and native.count_wav_s(odd, stop_s=None) is None
    info = probe(odd, label="s3://in/odd.wav")
    with pytest.raises(InputError) as caught:
        prepare(odd, info, "other", tmp_path, label="s3://in/odd.wav")
    assert caught.value.reason == "corrupt_audio"
    assert "s3://in/odd.wav is damaged: ffmpeg reported decode errors" in caught.value.message


def test_a_wav_cut_on_a_sample_is_left_to_ffprobe_which_estimates_it(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["wav"].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + (len(data) - 44) // 4 * 2])
    assert native.read_header(cut) is None
    info = probe(cut)
    assert info.duration_estimated
    assert prepare(cut, info, "other", tmp_path) == cut and info.duration_s == pytest.approx(SECONDS / 2, abs=1e-3)


def test_a_flac_header_is_read_in_process_but_counted_by_ffmpeg(files: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe(files["flac"])
    seen = record_argvs(monkeypatch)
    prepare(files["flac"], info, "other", tmp_path)
    assert [argv[0] for argv in seen] == ["ffmpeg"] and info.duration_s == SECONDS
    assert native.count_wav_s(files["flac"], stop_s=None) is None


def test_what_is_not_audio_is_refused_before_libsndfile_opens_it(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("RIFF? no: meeting notes\n" * 50)
    with pytest.raises(InputError) as caught:
        native.read_header(text)
    assert caught.value.reason == "not_audio"
    playlist = tmp_path / "out.pcm"
    playlist.write_text("#EXTM3U\n#EXTINF:2.0,\nhttp://example.invalid/a.mp3\n")
    with pytest.raises(InputError) as declared:
        output_duration_s(playlist, OUTPUT_FORMATS["pcm_16000"])
    assert declared.value.reason == "not_audio"


@pytest.fixture(scope="module")
def outputs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Outputs as the service sends them (mono, the format's rate), some cut, some the way other encoders write."""
    d = tmp_path_factory.mktemp("native-outputs")
    loud = d / "loud.wav"
    x = speech_like(SECONDS, RATE, seed=4)
    sf.write(loud, np.clip(x / np.abs(x).max() * 1.05, -1, 1), RATE, subtype="PCM_16")  # peaks at full scale
    made: dict[str, Path] = {}
    for name, (fmt, args) in {
        "mp3": ("mp3_44100_128", ["-c:a", "libmp3lame", "-b:a", "128k"]),
        "mp3_stream": ("mp3_44100_128", ["-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0"]),
        "mp3_vbr_no_xing": ("mp3_44100_128", ["-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0"]),
        "mp3_22050": ("mp3_22050_32", ["-c:a", "libmp3lame", "-b:a", "32k"]),
        "pcm_16000": ("pcm_16000", ["-f", "s16le"]), "pcm_44100": ("pcm_44100", ["-f", "s16le"]),
        "ulaw_8000": ("ulaw_8000", ["-f", "mulaw"]), "alaw_8000": ("alaw_8000", ["-f", "alaw"]),
        "opus": ("opus_48000_64", ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"]),
    }.items():
        made[name] = d / f"{name}.{OUTPUT_FORMATS[fmt].extension}"
        make("-i", str(loud), "-map_metadata", "-1", "-ac", "1", "-ar", str(OUTPUT_FORMATS[fmt].sample_rate), *args,
             str(made[name]))
    for name in ("mp3", "opus"):
        data = made[name].read_bytes()
        made[f"{name}_cut"] = d / f"cut.{made[name].suffix}"
        made[f"{name}_cut"].write_bytes(data[:len(data) // 2 + 77])
    return made


OUTPUT_CASES = {"mp3": "mp3_44100_128", "mp3_stream": "mp3_44100_128", "mp3_vbr_no_xing": "mp3_44100_128",
                "mp3_22050": "mp3_22050_32", "pcm_16000": "pcm_16000", "pcm_44100": "pcm_44100",
                "ulaw_8000": "ulaw_8000", "alaw_8000": "alaw_8000", "opus": "opus_48000_64",
                "mp3_cut": "mp3_44100_128", "opus_cut": "opus_48000_64"}


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_an_output_length_counted_in_process_is_ffmpegs(outputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                        name: str) -> None:
    fmt = OUTPUT_FORMATS[OUTPUT_CASES[name]]
    here, there, seen = _both(monkeypatch, lambda: output_duration_s(outputs[name], fmt))
    if name == "mp3_vbr_no_xing":  # libsndfile would stop at its estimate from the first frame: ffmpeg counts
        assert native.output_samples(outputs[name], fmt) is None and len(seen) == 1
    else:
        assert seen == []
    tolerance = 1.01 * 1152 / fmt.sample_rate if name == "mp3_cut" else 0.0  # ffmpeg decodes a cut last frame
    assert here == pytest.approx(there, abs=tolerance)
    if "cut" in name:
        assert 0.5 < here < SECONDS - 0.5  # type: ignore[operator]
    else:
        assert here == pytest.approx(SECONDS, abs=0.05)


@pytest.mark.parametrize("name", ["mp3", "mp3_stream", "mp3_22050", "pcm_16000", "pcm_44100", "ulaw_8000",
                                  "alaw_8000", "opus"])
def test_every_quality_figure_measured_in_process_is_ffmpegs(outputs: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    fmt = OUTPUT_FORMATS[OUTPUT_CASES[name]]
    here, there, seen = _both(monkeypatch, lambda: measure(outputs[name], output_format=fmt,
                                                           input_duration_s=SECONDS).to_dict())
    assert (seen == []) == (fmt.codec != "opus")  # opus: one ffmpeg decode, for the measure alone
    if fmt.codec != "mp3":
        assert here == there  # the same samples, bit for bit
        return
    assert here.keys() == there.keys()  # type: ignore[attr-defined]
    for key, value in here.items():  # type: ignore[attr-defined]
        other = there[key]  # type: ignore[index]
        assert value == (other if isinstance(value, (list, int)) else pytest.approx(other, abs=0.02)), key
    assert here["lufs"] is not None and here["peak_dbfs"] > -3  # type: ignore[index]


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_g711_bytes_expand_as_ffmpeg_expands_them(tmp_path: Path, codec: str) -> None:
    fmt = OUTPUT_FORMATS[f"{codec}_8000"]
    every = tmp_path / f"every.{codec}"
    every.write_bytes(bytes(range(256)))
    (here,) = native.output_blocks(every, fmt, block_samples=256, resume=lambda skip: iter(()))  # type: ignore[misc]
    assert np.array_equal(here, decoded(every, sample_rate=8000, input_args=fmt.ffmpeg_input_args()))


def test_a_decode_libsndfile_gives_up_is_finished_by_ffmpeg(outputs: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(outputs["mp3"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    fmt = OUTPUT_FORMATS["mp3_44100_128"]
    blocks = list(output_blocks(damaged, fmt, block_s=0.5))
    by_ffmpeg = decoded(damaged, sample_rate=fmt.sample_rate)
    total = sum(len(block) for block in blocks)
    assert abs(total - len(by_ffmpeg)) <= 1152  # ffmpeg resyncs past the damage; libsndfile gave up there
    assert total / fmt.sample_rate == pytest.approx(output_duration_s(damaged, fmt), abs=1152 / fmt.sample_rate)


def test_output_blocks_hold_the_whole_output_in_blocks_of_the_size_asked(outputs: dict[str, Path]) -> None:
    for name in ("mp3", "pcm_16000", "opus"):
        fmt = OUTPUT_FORMATS[OUTPUT_CASES[name]]
        blocks = list(output_blocks(outputs[name], fmt, block_s=0.25))
        size = round(0.25 * fmt.sample_rate)
        assert [len(b) for b in blocks[:-1]] == [size] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= size, name
        assert np.concatenate(blocks).dtype == np.float32
        assert sum(len(b) for b in blocks) == round(output_duration_s(outputs[name], fmt) * fmt.sample_rate), name


@pytest.mark.parametrize("name", ["mp3", "mp3_stream", "mp3_cut", "mp3_22050"])
def test_an_mp3_length_is_counted_from_its_frames_without_a_decode(outputs: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   name: str) -> None:
    fmt = OUTPUT_FORMATS[OUTPUT_CASES[name]]
    with monkeypatch.context() as patched:
        patched.setattr(sf.SoundFile, "read", lambda *args, **kwargs: pytest.fail("the length check decoded"))
        seen = record_argvs(patched)
        here = output_duration_s(outputs[name], fmt)
    assert seen == []
    decoded_s = sum(map(len, output_blocks(outputs[name], fmt, block_s=0.5))) / fmt.sample_rate  # the measure's
    # a cut file's frames also hold what a decoder drops (the Xing frame, the encoder's delay): 3 frames at most
    slack = native.MP3_GAPLESS_FRAMES if name == "mp3_cut" else 1.01
    assert here == pytest.approx(decoded_s, abs=slack * native.MP3_MAX_FRAME_SAMPLES / fmt.sample_rate)


def test_an_mp3_damaged_part_way_is_counted_by_ffmpeg_as_the_measure_decodes_it(outputs: dict[str, Path],
                                                                                tmp_path: Path) -> None:
    data = bytearray(outputs["mp3"].read_bytes())
    data[len(data) // 3:len(data) // 3 + 500] = bytes(500)  # the frames stop a third of the way in
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    fmt = OUTPUT_FORMATS["mp3_44100_128"]
    assert native.output_samples(damaged, fmt) is None  # left to ffmpeg: a frame walk would stop at the damage
    assert output_duration_s(damaged, fmt) > SECONDS * 0.9
