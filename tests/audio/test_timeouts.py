"""Every ffmpeg/ffprobe process has a wall-clock limit; past it the process group is killed and reaped, and the
caller gets ``decode_timeout``. The ceiling is lowered here so that the tests take seconds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import ffmpeg
from pipeline.audio.decode import pcm_stream
from pipeline.audio.prepare import prepare
from pipeline.audio.probe import probe
from pipeline.errors import InputError, PipelineError
from pipeline.formats import OUTPUT_FORMATS
from tests.audio.helpers import ffmpeg as make
from tests.audio.helpers import media_children

CEILING_S = 1.5
SLACK_S = 1.0  # scheduling on a loaded machine


@pytest.fixture
def ceiling(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(ffmpeg, "timeout_ceiling_s", lambda: CEILING_S)
    return CEILING_S


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "ten-minutes.flac"
    make("-f", "lavfi", "-i", "sine=f=220:r=16000:d=600", "-c:a", "flac", str(path))
    return path


def wait_for_no_children(within_s: float) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + within_s
    while (left := media_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_the_limit_is_real_time_plus_an_allowance_under_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg, "timeout_ceiling_s", lambda: 600.0)
    assert ffmpeg.timeout_for(10.0) == ffmpeg.TIMEOUT_FIXED_S + 10.0
    assert ffmpeg.timeout_for(4 * 3600.0) == 600.0
    assert ffmpeg.timeout_for(None) == 600.0


def test_an_encoder_whose_pipe_never_closes_is_killed_at_its_limit(ceiling: float, tmp_path: Path) -> None:
    """The endless pipe: a feeder that stalls and never closes stdin. ffmpeg is gone at the limit, not later."""
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        with ffmpeg.Encoder(OUTPUT_FORMATS["mp3_22050_32"], tmp_path / "out.mp3", what="the stitched output") as enc:
            enc.write(np.zeros(22050, dtype=np.float32))
            pid = enc._proc.popen.pid
            time.sleep(ceiling + SLACK_S)
            assert [c for c in media_children() if c[0] == pid and c[2] != "Z"] == []  # killed while we slept
            enc.write(np.zeros(22050 * 60, dtype=np.float32))
    assert caught.value.reason == "decode_timeout"
    assert "encoding the stitched output did not finish within" in caught.value.message
    assert time.monotonic() - started < ceiling + SLACK_S + 2
    assert media_children() == []


def test_a_decoder_whose_reader_stalls_is_killed_at_its_limit(ceiling: float, long_flac: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        for _ in pcm_stream(long_flac, sample_rate=16000, block_s=1.0):
            time.sleep(0.4)  # slower than the limit allows: the pipe to us is full, ffmpeg waits for ever
    elapsed = time.monotonic() - started
    assert caught.value.reason == "decode_timeout" and "decoding ten-minutes.flac" in caught.value.message
    assert ceiling <= elapsed < ceiling + SLACK_S + 1
    assert media_children() == []


def test_a_run_to_completion_past_its_limit_is_killed(monkeypatch: pytest.MonkeyPatch, long_flac: Path,
                                                      tmp_path: Path) -> None:
    info = probe(long_flac)
    # far less than ffmpeg needs to start up (a quiet machine decodes the whole sine FLAC in well under 50 ms)
    monkeypatch.setattr(ffmpeg, "timeout_ceiling_s", lambda: 0.01)
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        prepare(long_flac, info, "pcm_s16le_16", tmp_path, label="s3://in/long.flac")
    assert caught.value.reason == "decode_timeout"
    assert time.monotonic() - started < 0.01 + SLACK_S
    assert wait_for_no_children(0) == []
    with pytest.raises(InputError) as probed:
        ffmpeg.probe_json(long_flac)  # probe() reads a FLAC's header in process: ffprobe itself is what is fenced
    assert probed.value.reason == "decode_timeout" and media_children() == []


def test_a_decoder_left_early_leaves_no_process(long_flac: Path) -> None:
    stream = pcm_stream(long_flac, sample_rate=16000, block_s=0.5)
    next(stream)
    stream.close()
    assert media_children() == []
