"""A long input's segments are stitched in order as they arrive, whatever order they finish in; the streamed stitch
and its quality measure equal the one-go stitch and ``measure`` of the same pieces; a job that died half-way resumes
from its checkpoints. The service is a stand-in (an identity voice that resamples each piece); storage is in memory.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.audio import segments as segments_module
from pipeline.audio.probe import AudioInfo, probe
from pipeline.audio.quality import measure
from pipeline.audio.segments import Stitcher, plan_segments, stitch
from pipeline.conversion import longform
from pipeline.conversion.calls import AttemptRecord, Conversion
from pipeline.errors import TransientError
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.samples import write_speech_like
from pipeline.manifest.job import Job
from pipeline.s3uri import S3Uri
from pipeline.storage.memory import memory_storage
from tests.audio.helpers import ffmpeg
from tests.support import VOICES

SECONDS = 130.0
MAX_SEGMENT_S = 30.0
OUTPUT = S3Uri("outputs", "episode.mp3")
MP3 = OUTPUT_FORMATS["mp3_44100_128"]
SEGMENT_FORMAT = OUTPUT_FORMATS["pcm_44100"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AudioInfo]:
    path = write_speech_like(tmp_path_factory.mktemp("long") / "episode.wav", SECONDS, 16000, seed=3)
    return path, probe(path)


class FakeService:
    """Converts a piece as an identity voice would (44.1 kHz s16le), after a delay chosen per segment; records
    when each segment's conversion ended, and keeps a copy of every piece it returned."""

    def __init__(self, keep: Path, delays_s: dict[int, float] | None = None, fail: int | None = None) -> None:
        self.keep, self.delays_s, self.fail = keep, delays_s or {}, fail
        self.events: list[tuple[str, int]] = []
        self.converted: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, _ctx: Any, _job: Job, audio: Path, out: Path, *, input_s: float, audio_content_type: str,
                 segment: int, attempts: list[AttemptRecord]) -> Conversion:
        with self._lock:
            self.events.append(("requested", segment))
        time.sleep(self.delays_s.get(segment, 0.0))
        attempts.append(AttemptRecord(n=1, started_at="2026-12-02T00:00:00+00:00", segment=segment, outcome="ok",
                                      request_id=f"req-{segment}"))
        if segment == self.fail:
            raise TransientError(f"segment {segment}: the worker died here")
        ffmpeg("-i", str(audio), "-ar", "44100", "-ac", "1", "-c:a", "pcm_s16le", "-f", "s16le", str(out))
        shutil.copy(out, self.keep / f"seg-{segment}.pcm")
        with self._lock:
            self.converted.append(segment)
            self.events.append(("converted", segment))
        return Conversion(duration_out_s=out.stat().st_size / 2 / 44100, request_id=f"req-{segment}")


@pytest.fixture()
def recorded_stitches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every piece the job's stitcher takes, in the order it takes them (shared with the service's events)."""
    events: list[tuple[str, int]] = []

    class Recording(Stitcher):
        def add(self, piece: Path) -> None:
            events.append(("stitched", self.added))
            super().add(piece)

    monkeypatch.setattr(longform, "Stitcher", Recording)
    return events


def run(tmp_path: Path, storage: Any, service: FakeService, source: tuple[Path, AudioInfo],
        monkeypatch: pytest.MonkeyPatch, workers: int = 3) -> tuple[Path, longform.Segmented]:
    path, info = source
    monkeypatch.setattr(longform, "convert_with_retries", service)
    ctx = SimpleNamespace(storage=storage, calls=SimpleNamespace(settings=SimpleNamespace(segment_workers=workers)))
    job = Job(input="s3://inputs/episode.wav", output=str(OUTPUT), voice_id=VOICES[0], output_format=MP3.name)
    workdir = tmp_path / "job"
    workdir.mkdir(exist_ok=True)
    out = workdir / "output.mp3"
    made = longform.convert_segmented(ctx, job, path, out, info=info, output=OUTPUT,  # type: ignore[arg-type]
                                      max_segment_s=MAX_SEGMENT_S, attempts=[])
    return out, made


def test_pieces_are_stitched_in_order_as_they_arrive_even_when_they_finish_out_of_order(
        tmp_path: Path, source: tuple[Path, AudioInfo], recorded_stitches: list[tuple[str, int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    count = len(plan_segments(source[0], max_segment_s=MAX_SEGMENT_S - 2 * longform.OVERLAP_S))
    assert count == 5
    service = FakeService(tmp_path, delays_s={0: 0.3, 1: 4.0, 2: 0.0, 3: 1.5, 4: 0.8})  # ends 2, 0, 4, 3, 1
    service.events = recorded_stitches
    run(tmp_path, memory_storage("outputs"), service, source, monkeypatch, workers=count)
    converted = [k for what, k in recorded_stitches if what == "converted"]
    stitched = [k for what, k in recorded_stitches if what == "stitched"]
    assert converted[:2] == [2, 0] and converted[-1] == 1  # they did finish out of order
    assert stitched == list(range(count))
    for k in stitched:  # each piece as soon as it and every one before it is converted, never earlier
        at = recorded_stitches.index(("stitched", k))
        assert all(recorded_stitches.index(("converted", j)) < at for j in range(k + 1))
    # piece 0 went in while segment 1 was still converting; 2, 3 and 4 waited for it, then went in one after another
    assert recorded_stitches.index(("stitched", 0)) < recorded_stitches.index(("converted", 1))
    assert recorded_stitches[recorded_stitches.index(("converted", 1)) + 1:] == [("stitched", k) for k in (1, 2, 3, 4)]


def test_the_streamed_stitch_and_its_measure_equal_the_one_go_stitch_and_measure(
        tmp_path: Path, source: tuple[Path, AudioInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    service = FakeService(tmp_path, delays_s={0: 0.5, 2: 1.0})
    out, made = run(tmp_path, memory_storage("outputs"), service, source, monkeypatch)
    segments = plan_segments(source[0], max_segment_s=MAX_SEGMENT_S - 2 * longform.OVERLAP_S)
    reference = stitch([tmp_path / f"seg-{s.index}.pcm" for s in segments], segments, segment_format=SEGMENT_FORMAT,
                       output_format=MP3, out=tmp_path / "reference.mp3", crossfade_s=longform.OVERLAP_S)
    assert out.read_bytes() == reference.read_bytes()  # the same encoder fed the same samples: the same file
    expected = measure(reference, output_format=MP3, input_duration_s=source[1].duration_s).to_dict()
    assert made.quality is not None
    got = made.quality.to_dict()
    assert got["duration_out_s"] == expected["duration_out_s"] == round(round(SECONDS * 44100) / 44100, 6)
    assert got["drift_ms"] == 0.0
    assert got["flags"] == expected["flags"]
    for name in ("lufs", "peak_dbfs", "leading_silence_s", "trailing_silence_s"):
        assert got[name] == pytest.approx(expected[name], abs=0.01)
    assert got["clipped_samples"] == expected["clipped_samples"]
    assert [r["source"] for r in made.records] == ["converted"] * len(segments)


def test_a_job_that_died_half_way_converts_only_what_is_missing(
        tmp_path: Path, source: tuple[Path, AudioInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    storage = memory_storage("outputs")
    first = FakeService(tmp_path, fail=3)
    with pytest.raises(TransientError):
        run(tmp_path, storage, first, source, monkeypatch)
    checkpoints = sorted(item.uri.key for item in storage.list("outputs", longform.work_prefix(OUTPUT).key))
    assert checkpoints == [f"episode.mp3.work/seg-{k:04d}.pcm_44100" for k in (0, 1, 2, 4)]
    again = FakeService(tmp_path / "again")
    (tmp_path / "again").mkdir()
    out, made = run(tmp_path, storage, again, source, monkeypatch)
    assert again.converted == [3]
    assert [r["source"] for r in made.records] == ["checkpoint"] * 3 + ["converted", "checkpoint"]
    assert made.quality is not None and made.quality.drift_ms == 0.0
    straight = FakeService(tmp_path / "straight")
    (tmp_path / "straight").mkdir()
    fresh, _ = run(tmp_path / "straight", memory_storage("outputs"), straight, source, monkeypatch)
    assert out.read_bytes() == fresh.read_bytes()


def test_the_first_request_starts_while_the_rest_of_the_input_is_still_being_planned(
        tmp_path: Path, source: tuple[Path, AudioInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    service = FakeService(tmp_path)
    real_decode, real_plan = segments_module.pcm_stream, longform.iter_segments

    def slow_decode(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for block in real_decode(*args, **kwargs):  # 10 s blocks: the 130 s input takes 13 x 0.3 s to plan
            time.sleep(0.3)
            yield block

    def recorded_plan(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from real_plan(*args, **kwargs)
        service.events.append(("planned", -1))

    monkeypatch.setattr(segments_module, "pcm_stream", slow_decode)
    monkeypatch.setattr(longform, "iter_segments", recorded_plan)
    _, made = run(tmp_path, memory_storage("outputs"), service, source, monkeypatch)
    assert service.events.index(("requested", 0)) < service.events.index(("planned", -1))
    assert len(made.records) == 5 and made.quality is not None and made.quality.drift_ms == 0.0
