"""Duration is counted, not read: the length that limits, bills and plans is the decoded one, whatever the header
says, and the header's claim is kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.audio.prepare import prepare
from pipeline.audio.probe import check_limits, probe
from pipeline.errors import InputError
from tests.audio.helpers import SECONDS, lying_flac, record_argvs
from tests.audio.helpers import ffmpeg as make

LIMIT_S = 30.0


@pytest.fixture(scope="module")
def liar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 s of audio whose STREAMINFO says 2 s."""
    return lying_flac(tmp_path_factory.mktemp("liar") / "input.flac", actual_s=90.0, claimed_s=2.0)


def test_the_crafted_flac_lies(liar: Path) -> None:
    info = probe(liar)
    assert info.duration_s == pytest.approx(2.0) and info.header_duration_s == pytest.approx(2.0)
    assert not info.counted


@pytest.mark.parametrize("file_format", ["other", "pcm_s16le_16"])
def test_a_flac_that_claims_2_s_and_holds_90_s_is_too_long_at_30_s(liar: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   file_format: str) -> None:
    info = probe(liar, label="s3://in/liar.flac")
    check_limits(info, max_bytes=10**9, max_seconds=LIMIT_S, label="s3://in/liar.flac")  # the header passes
    seen = record_argvs(monkeypatch)
    with pytest.raises(InputError) as caught:
        prepare(liar, info, file_format, tmp_path, label="s3://in/liar.flac")
    assert caught.value.reason == "too_long"
    assert caught.value.message == (
        "input s3://in/liar.flac is longer than the limit of 30 s (STS_MAX_INPUT_SECONDS): decoding was stopped at "
        "31.0 s; its header claims 2.0 s; split the recording")
    assert len(seen) == 1  # one decode, stopped at the limit + 1 s
    assert info.duration_s == pytest.approx(2.0) and not info.counted  # never became a length to bill


def test_a_transcoded_liar_is_stopped_at_the_limit_too(tmp_path: Path) -> None:
    six = tmp_path / "six.flac"  # more than two channels: prepare writes a mono FLAC, and that decode counts
    make("-f", "lavfi", "-i", "sine=f=220:r=16000:d=90", "-filter_complex", "[0]asplit=6[a][b][c][d][e][f];"
         "[a][b][c][d][e][f]amerge=inputs=6", "-c:a", "flac", str(six))
    data = bytearray(six.read_bytes())
    field = int.from_bytes(data[18:26], "big")
    data[18:26] = ((field & ~((1 << 36) - 1)) | 32000).to_bytes(8, "big")  # claims 2 s
    six.write_bytes(bytes(data))
    info = probe(six)
    assert info.channels == 6 and info.duration_s == pytest.approx(2.0)
    check_limits(info, max_bytes=10**9, max_seconds=LIMIT_S, label="six")
    with pytest.raises(InputError) as caught:
        prepare(six, info, "other", tmp_path, label="six")
    assert caught.value.reason == "too_long" and "decoding was stopped at 31.0 s" in caught.value.message


def test_without_a_limit_the_counted_length_replaces_the_claim(liar: Path, tmp_path: Path) -> None:
    info = probe(liar)
    assert prepare(liar, info, "other", tmp_path) == liar
    assert (info.duration_s, info.header_duration_s, info.counted) == (pytest.approx(90.0), pytest.approx(2.0),
                                                                       True)


def test_an_honest_input_is_counted_to_the_sample(files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("wav", "flac", "stereo", "six"):
        info = probe(files[name])
        check_limits(info, max_bytes=10**9, max_seconds=LIMIT_S, label=name)
        prepare(files[name], info, "other", tmp_path)
        assert info.counted and info.duration_s == SECONDS and info.header_duration_s == pytest.approx(SECONDS)


def test_a_header_that_claims_too_much_is_refused_without_decoding(liar: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe(liar)
    seen = record_argvs(monkeypatch)
    with pytest.raises(InputError) as caught:
        check_limits(info, max_bytes=10**9, max_seconds=1.5, label="s3://in/liar.flac")
    assert caught.value.reason == "too_long" and "2.0 s long, over the limit of 1.5 s" in caught.value.message
    assert seen == []


def test_an_input_exactly_at_the_limit_passes(files: dict[str, Path], tmp_path: Path) -> None:
    info = probe(files["wav"])
    check_limits(info, max_bytes=10**9, max_seconds=SECONDS, label="wav")
    assert prepare(files["wav"], info, "other", tmp_path) == files["wav"]
    assert info.duration_s == SECONDS
