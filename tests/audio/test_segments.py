"""Long recordings: cuts land in pauses, pieces are sample-exact, and the stitched output keeps the input's timing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import ffmpeg as ffmpeg_boundary
from pipeline.audio import segments as segments_module
from pipeline.audio.decode import duration_s
from pipeline.audio.ffmpeg import FFMPEG, FFPROBE
from pipeline.audio.prepare import to_flac
from pipeline.audio.probe import probe
from pipeline.audio.segments import Segment, Stitcher, cut_segment, iter_segments, plan_segments, stitch
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import write_speech_like
from tests.audio.helpers import decoded, ffmpeg

RATE = 16000
LONG_S = 1200.0
MAX_S = 60.0
SHORT_S = 75.0
OVERLAP_S = 0.05
PCM_16K = OUTPUT_FORMATS["pcm_16000"]
MP3 = OUTPUT_FORMATS["mp3_44100_128"]


@pytest.fixture(scope="module")
def long_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 minutes of speech-like audio: 1.5-4 s phrases, 0.35-0.7 s pauses of -66 dBFS noise."""
    return write_speech_like(tmp_path_factory.mktemp("long") / "episode.wav", LONG_S, RATE, seed=11)


@pytest.fixture(scope="module")
def plan(long_input: Path) -> list[Segment]:
    return plan_segments(long_input, max_segment_s=MAX_S)


@pytest.fixture(scope="module")
def pieces(long_input: Path, plan: list[Segment], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each segment cut as raw 16 kHz s16le: exactly what the service returns as pcm_16000 for an identity voice."""
    d = tmp_path_factory.mktemp("pieces")
    return [cut_segment(long_input, seg, d / f"seg-{seg.index:04d}", file_format="pcm_s16le_16", overlap_s=OVERLAP_S)
            for seg in plan]


@pytest.fixture(scope="module")
def mp3_pieces(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Segment]]:
    """75 s cut as FLAC (``other``) and returned by a stand-in service as mp3_44100_128."""
    d = tmp_path_factory.mktemp("mp3-pieces")
    source = write_speech_like(d / "short.wav", SHORT_S, RATE, seed=5)
    segments = plan_segments(source, max_segment_s=20.0)
    converted = []
    for seg in segments:
        piece = cut_segment(source, seg, d / f"in-{seg.index}", file_format="other", overlap_s=OVERLAP_S)
        assert piece.suffix == ".flac"
        mp3 = d / f"seg-{seg.index}.mp3"
        ffmpeg("-i", str(piece), "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))
        converted.append(mp3)
    return converted, segments


def max_jumps(y: np.ndarray, joins: list[int], half_window: int) -> tuple[float, float]:
    """Largest sample-to-sample step within ``half_window`` of any join, and anywhere else."""
    steps = np.abs(np.diff(y))
    near = np.zeros(len(steps), dtype=bool)
    for j in joins:
        near[max(0, j - half_window): j + half_window] = True
    return float(steps[near].max()), float(steps[~near].max())


def test_every_segment_fits_and_the_plan_covers_the_input_exactly(plan: list[Segment]) -> None:
    assert len(plan) > LONG_S / MAX_S
    assert plan[0].start_s == 0.0 and plan[-1].end_s == LONG_S
    assert [s.index for s in plan] == list(range(len(plan)))
    for before, after in zip(plan, plan[1:], strict=False):
        assert before.end_s == after.start_s
    assert all(0 < s.duration_s <= MAX_S for s in plan)
    cuts = [s.end_s for s in plan[:-1]]
    assert all(abs(c * 50 - round(c * 50)) < 1e-9 for c in cuts)  # the 20 ms grid
    # searched in the last quarter of the allowed length
    assert all(s.duration_s >= 0.75 * MAX_S for s in plan[:-1])


def test_segments_are_planned_while_the_input_is_still_being_decoded(long_input: Path, plan: list[Segment],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    real = segments_module.pcm_stream

    def counted(*args: object, **kwargs: object) -> Iterator[np.ndarray]:
        for block in real(*args, **kwargs):  # type: ignore[arg-type]
            decoded.append(len(block))
            yield block

    monkeypatch.setattr(segments_module, "pcm_stream", counted)
    seen = [(segment, sum(decoded) / RATE) for segment in iter_segments(long_input, max_segment_s=MAX_S)]
    assert [segment for segment, _ in seen] == plan
    first, decoded_s = seen[0]
    assert decoded_s <= MAX_S + 1.2 + 10.0 < LONG_S / 10  # a window, a second and a smoothing past it, one block
    for segment, decoded_s in seen[:-2]:  # each but the last few as soon as its window had been decoded
        assert decoded_s <= segment.start_s + MAX_S + 1.2 + 10.0


def test_every_cut_lies_in_a_pause(long_input: Path, plan: list[Segment]) -> None:
    with sf.SoundFile(long_input) as f:
        for seg in plan[:-1]:
            cut = round(seg.end_s * RATE)
            f.seek(cut - 1600)
            around = f.read(3200, dtype="float64")  # 100 ms either side
            frame_rms = np.sqrt((around.reshape(-1, 160) ** 2).mean(axis=1))  # the 10 ms envelope
            assert frame_rms.max() < 0.001, f"cut at {seg.end_s} s is not in a pause"  # pauses: 0.0005 RMS noise
            assert np.abs(around).max() < 0.005


def test_cut_and_stitch_keeps_the_input_exactly_outside_the_joins(long_input: Path, plan: list[Segment],
                                                                  pieces: list[Path], tmp_path: Path) -> None:
    out = stitch(pieces, plan, segment_format=PCM_16K, output_format=PCM_16K, out=tmp_path / "episode.pcm",
                 crossfade_s=OVERLAP_S)
    y = np.fromfile(out, dtype="<i2")
    x = sf.read(long_input, dtype="int16")[0]
    assert len(y) == len(x) == LONG_S * RATE
    joins = [round(s.end_s * RATE) for s in plan[:-1]]
    half = round(OVERLAP_S / 2 * RATE)
    differs = np.flatnonzero(x != y)
    assert all(any(abs(i - j) <= half for j in joins) for i in differs)
    near, elsewhere = max_jumps(y.astype(np.float64), joins, half_window=4 * half)
    assert near <= elsewhere


@pytest.mark.parametrize("name", ["mp3_44100_128", "opus_48000_64", "ulaw_8000"])
def test_pieces_returned_as_mp3_stitch_to_the_exact_length_without_clicks(
        mp3_pieces: tuple[list[Path], list[Segment]], tmp_path: Path, name: str) -> None:
    converted, segments = mp3_pieces
    assert len(segments) >= 4
    fmt = OUTPUT_FORMATS[name]
    out = stitch(converted, segments, segment_format=MP3, output_format=fmt, out=tmp_path / f"out.{fmt.extension}",
                 crossfade_s=OVERLAP_S)
    input_args = fmt.ffmpeg_input_args()
    assert duration_s(out, input_args=input_args) == pytest.approx(SHORT_S, abs=1 / fmt.sample_rate)
    y = decoded(out, sample_rate=fmt.sample_rate, input_args=input_args)
    joins = [round(s.end_s * fmt.sample_rate) for s in segments[:-1]]
    near, elsewhere = max_jumps(y, joins, half_window=round(0.1 * fmt.sample_rate))
    assert near <= elsewhere


@pytest.mark.parametrize("name", ["mp3_44100_128", "mp3_22050_32", "mp3_24000_48", "opus_48000_64", "ulaw_8000",
                                  "pcm_16000"])
def test_the_output_read_back_while_it_is_encoded_is_its_decode(
        mp3_pieces: tuple[list[Path], list[Segment]], tmp_path: Path, name: str) -> None:
    converted, segments = mp3_pieces
    fmt = OUTPUT_FORMATS[name]
    blocks: list[np.ndarray] = []
    out = tmp_path / f"out.{fmt.extension}"
    with Stitcher(segments, segment_format=MP3, output_format=fmt, out=out, crossfade_s=OVERLAP_S,
                  on_output=lambda block: blocks.append(block.copy()), output_block_s=2.0) as stitcher:
        for piece in converted:
            stitcher.add(piece)
    read_back = np.concatenate(blocks)
    assert np.array_equal(read_back, decoded(out, sample_rate=fmt.sample_rate, input_args=fmt.ffmpeg_input_args()))
    assert len(read_back) == round(SHORT_S * fmt.sample_rate)
    assert {len(block) for block in blocks[:-1]} == {2 * fmt.sample_rate}  # measure's own blocks


def test_a_failing_reader_of_the_output_fails_the_stitch(mp3_pieces: tuple[list[Path], list[Segment]],
                                                         tmp_path: Path) -> None:
    converted, segments = mp3_pieces

    def refuse(_block: np.ndarray) -> None:
        raise RuntimeError("the measure broke")

    with pytest.raises(RuntimeError, match="the measure broke"), \
            Stitcher(segments, segment_format=MP3, output_format=MP3, out=tmp_path / "out.mp3",
                     on_output=refuse) as stitcher:
        for piece in converted:
            stitcher.add(piece)


@pytest.mark.parametrize("kind", ["wav", "flac", "raw", "mp3"])
def test_cut_bounds_are_sample_exact(tmp_path: Path, kind: str) -> None:
    rate = 16000 if kind == "raw" else 22050
    x = (np.random.default_rng(3).uniform(-0.5, 0.5, 30 * rate) * 32767).astype(np.int16)
    input_args: list[str] = []
    if kind == "raw":
        source = tmp_path / "noise.pcm"
        x.tofile(source)
        input_args = PCM_16K.ffmpeg_input_args()
    elif kind == "mp3":  # not seekable to the sample: the cut decodes from the start; compare with a full decode
        source = tmp_path / "noise.mp3"
        sf.write(tmp_path / "noise.wav", x, rate)
        ffmpeg("-i", str(tmp_path / "noise.wav"), "-c:a", "libmp3lame", "-b:a", "128k", str(source))
        x = np.clip(np.rint(decoded(source, sample_rate=rate) * 32768), -32768, 32767).astype(np.int16)
    else:
        source = tmp_path / f"noise.{kind}"
        sf.write(source, x, rate, subtype="PCM_16")
    for seg in (Segment(0, 0.0, 7.34), Segment(1, 7.34, 19.02), Segment(2, 19.02, 30.0)):
        piece = cut_segment(source, seg, tmp_path / f"piece-{seg.index}", file_format="other", overlap_s=0.05,
                            input_args=input_args)
        pad = round(0.05 * rate)
        first = max(0, round(seg.start_s * rate) - pad)
        stop = min(len(x), round(seg.end_s * rate) + pad)
        got = sf.read(piece, dtype="int16")[0]
        assert len(got) == stop - first
        assert np.abs(got.astype(int) - x[first:stop]).max() <= (1 if kind == "mp3" else 0)


def test_stitch_places_pieces_that_came_back_too_short_or_too_long(tmp_path: Path) -> None:
    segments = [Segment(0, 0.0, 4.0), Segment(1, 4.0, 8.0), Segment(2, 8.0, 10.5)]
    pad = round(OVERLAP_S * RATE)
    lengths = [4 * RATE + pad - 480, 4 * RATE + 2 * pad + 640, round(2.5 * RATE) + pad - 1000]  # -30/+40/-62 ms
    pieces = []
    for i, n in enumerate(lengths):
        piece = tmp_path / f"seg-{i}.pcm"
        (np.full(n, 1000 * (i + 1))).astype("<i2").tofile(piece)
        pieces.append(piece)
    out = stitch(pieces, segments, segment_format=PCM_16K, output_format=PCM_16K, out=tmp_path / "out.pcm")
    y = np.fromfile(out, dtype="<i2")
    assert len(y) == round(10.5 * RATE)
    # every piece sits at its planned place: the middle of each segment holds that piece's value
    assert [int(y[round(t * RATE)]) for t in (2.0, 6.0, 9.0)] == [1000, 2000, 3000]
    assert int(y[-1]) == 0  # the short last piece is padded with silence, not stretched


def test_time_scale_follows_a_speed_change(tmp_path: Path) -> None:
    segments = [Segment(0, 0.0, 6.0), Segment(1, 6.0, 12.0)]
    scale = 1 / 1.2
    pieces = []
    for i, seconds in enumerate((6.0 + OVERLAP_S, 6.0 + OVERLAP_S)):
        piece = tmp_path / f"seg-{i}.pcm"
        np.zeros(round(seconds * scale * RATE), dtype="<i2").tofile(piece)
        pieces.append(piece)
    out = stitch(pieces, segments, segment_format=PCM_16K, output_format=PCM_16K, out=tmp_path / "out.pcm",
                 time_scale=scale)
    assert out.stat().st_size == 2 * round(12.0 * scale * RATE)


def test_a_short_input_is_one_segment(tmp_path: Path) -> None:
    source = write_speech_like(tmp_path / "clip.wav", 12.5, RATE)
    assert plan_segments(source, max_segment_s=60.0) == [Segment(0, 0.0, 12.5)]
    with pytest.raises(ValueError):
        plan_segments(source, max_segment_s=2.0)


def count_programs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command line the boundary runs from now on, recorded as it passes through ``_run`` and ``_start``."""
    seen: list[list[str]] = []
    run, start = ffmpeg_boundary._run, ffmpeg_boundary._start
    monkeypatch.setattr(ffmpeg_boundary, "_run", lambda argv, **kw: (seen.append(argv), run(argv, **kw))[1])
    monkeypatch.setattr(ffmpeg_boundary, "_start", lambda argv, **kw: (seen.append(argv), start(argv, **kw))[1])
    return seen


@pytest.mark.parametrize("file_format", ["other", "pcm_s16le_16"])
def test_planning_and_cutting_with_the_job_probe_run_no_ffprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 file_format: str) -> None:
    source = write_speech_like(tmp_path / "short.wav", 30.0, RATE, seed=7)
    info = probe(source)
    seen = count_programs(monkeypatch)
    segments = plan_segments(source, max_segment_s=12.0, info=info)
    pieces = [cut_segment(source, seg, tmp_path / f"in-{seg.index}", file_format=file_format, overlap_s=OVERLAP_S,
                          info=info) for seg in segments]
    assert len(pieces) >= 3
    assert [argv[0] for argv in seen] == [FFMPEG] * (1 + len(segments))  # one decode to plan, one run per cut
    assert all("-ss" in argv for argv in seen[2:])  # WAV is seeked into, as before
    seen.clear()
    cut_segment(source, segments[1], tmp_path / "again", file_format=file_format, overlap_s=OVERLAP_S)
    assert [argv[0] for argv in seen] == [FFPROBE, FFPROBE, FFMPEG]  # without the probe, ffprobe is asked


def test_a_flac_made_from_an_mp3_is_cut_with_a_seek_and_sample_exact(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The job probes the mp3, then makes it FLAC for cutting: the probe's rate holds, the FLAC is seeked into."""
    rate = 22050
    x = (np.random.default_rng(4).uniform(-0.5, 0.5, 30 * rate) * 32767).astype(np.int16)
    sf.write(tmp_path / "noise.wav", x, rate)
    mp3 = tmp_path / "noise.mp3"
    ffmpeg("-i", str(tmp_path / "noise.wav"), "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))
    info = probe(mp3)
    flac = to_flac(mp3, tmp_path / "prepared-for-segments.flac")
    reference = sf.read(flac, dtype="int16")[0]
    seen = count_programs(monkeypatch)
    seg = Segment(1, 7.34, 19.02)
    piece = cut_segment(flac, seg, tmp_path / "piece", file_format="other", overlap_s=0.05, info=info)
    assert [argv[0] for argv in seen] == [FFMPEG] and "-ss" in seen[0]
    first, stop = round(seg.start_s * rate) - round(0.05 * rate), round(seg.end_s * rate) + round(0.05 * rate)
    assert np.array_equal(sf.read(piece, dtype="int16")[0], reference[first:stop])
