"""Long recordings: cut at silences, convert the segments in parallel, checkpoint each in S3, stitch as they come.

Segments are converted inside the job (a thread pool, every request still under the shared limiter) rather than as
separate Celery tasks: the stitch needs every segment on one disk, a chord on Redis is fragile (it can lose its
callback), and the S3 checkpoints already make a retried job convert only what is missing.

Segments are requested as headerless PCM at the output's rate, whatever the job's output format: decoded lossy
segments would carry codec delay into every join, and the result is encoded only once, at the stitch.

The stitch runs while the rest convert: the job's thread takes the segments in order, each as soon as it and every
one before it is converted (from the service or a checkpoint), and feeds it to one running encoder whose output is
read back into the output's quality measure. When the last segment returns, only the pieces after the last one in
order remain to stitch and measure. The plan is made as the input is decoded, each segment's request starting as
soon as its end is placed, and each segment is cut just before its request, on the thread that sends it.

Checkpoints for output ``s3://B/K`` live under ``s3://B/K.work/seg-NNNN.<format>`` and are deleted after the commit.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.audio.prepare import content_type_of, to_flac
from pipeline.audio.probe import AudioInfo
from pipeline.audio.quality import BLOCK_S, QualityMeter, QualityReport
from pipeline.audio.segments import Segment, Stitcher, cut_segment, iter_segments
from pipeline.conversion.calls import AttemptRecord, convert_with_retries, expected_output_s
from pipeline.formats import OUTPUT_FORMATS, PCM_S16LE_16_RATE, OutputFormat
from pipeline.keys import WORK_SUFFIX, segment_name
from pipeline.manifest.job import Job
from pipeline.ops import tracing
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage, sha256_file

if TYPE_CHECKING:
    from pipeline.conversion.context import JobContext

log = logging.getLogger(__name__)

OVERLAP_S = 0.05
#: inputs the cutter can seek in exactly; others (mp3, AAC, ...) are made FLAC once, instead of decoded from the
#: start for every cut
SEEKABLE_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Segmented:
    """What ``convert_segmented`` made besides the output file."""

    records: list[dict[str, Any]]  # each segment's, for provenance
    quality: QualityReport | None  # the stitched output's, measured as it was encoded (None: not asked for)


def work_prefix(output: S3Uri) -> S3Uri:
    return output.child(WORK_SUFFIX)


def _raw_args(job: Job) -> list[str]:
    if job.file_format == "pcm_s16le_16":
        return ["-f", "s16le", "-ar", str(PCM_S16LE_16_RATE), "-ac", "1"]
    return []


def convert_segmented(ctx: JobContext, job: Job, prepared: Path, out: Path, *, info: AudioInfo, output: S3Uri,
                      max_segment_s: float, attempts: list[AttemptRecord], measure: bool = True) -> Segmented:
    """Convert a long input segment by segment, resuming from checkpoints, stitching the result into ``out`` as
    the segments come; with ``measure``, measure the output's quality (``quality.measure``'s report) on the way.

    A piece is its segment plus ``OVERLAP_S`` of context on each inner side, so segments are planned that much
    shorter than ``max_segment_s`` and no request exceeds it.
    """
    output_format = OUTPUT_FORMATS[job.output_format]
    if job.file_format == "other" and prepared.suffix.lower() not in SEEKABLE_SUFFIXES:
        prepared = to_flac(prepared, out.parent / "prepared-for-segments.flac")
    segment_format = OUTPUT_FORMATS[f"pcm_{output_format.sample_rate}"]
    planned = iter_segments(prepared, max_segment_s=max_segment_s - 2 * OVERLAP_S, input_args=_raw_args(job),
                            info=info)
    workdir = Path(tempfile.mkdtemp(prefix="segments-", dir=out.parent))
    piece = _Pieces(ctx, job.model_copy(update={"output_format": segment_format.name}), prepared, info=info,
                    output=output, workdir=workdir, segment_format=segment_format, attempts=attempts)
    meter = QualityMeter(output_format) if measure else None
    with ThreadPoolExecutor(max_workers=max(1, ctx.calls.settings.segment_workers)) as pool:
        segments: list[Segment] = []
        pending = []
        try:
            for item in _with_last(planned):  # each request starts as soon as its segment is planned
                segments.append(item.segment)
                pending.append(pool.submit(tracing.carried(piece.convert), item))
        except BaseException:
            for future in pending:  # a plan that fails half-way starts no further request
                future.cancel()
            raise
        with _stitcher(segments, segment_format, output_format, out, job, meter) as stitcher:
            for future in pending:  # in segment order, each as soon as it and those before it are converted
                converted = future.result()
                stitcher.add(converted)
                converted.unlink()
    quality = meter.report(input_duration_s=expected_output_s(job, info.duration_s)) if meter else None
    return Segmented(records=[piece.records[segment.index] for segment in segments], quality=quality)


@dataclass(frozen=True)
class _Planned:
    segment: Segment
    last: bool


def _with_last(segments: Iterator[Segment]) -> Iterator[_Planned]:
    """Each segment once the next is planned (or the plan is over), so that it is known whether it is the last."""
    previous = next(segments)
    for segment in segments:
        yield _Planned(previous, last=False)
        previous = segment
    yield _Planned(previous, last=True)


def _stitcher(segments: list[Segment], segment_format: OutputFormat, output_format: OutputFormat, out: Path,
              job: Job, meter: QualityMeter | None) -> Stitcher:
    return Stitcher(segments, segment_format=segment_format, output_format=output_format, out=out,
                    crossfade_s=OVERLAP_S, time_scale=expected_output_s(job, 1.0),
                    on_output=meter.add if meter else None, output_block_s=BLOCK_S)


class _Pieces:
    """One segment to its converted piece on disk: from its checkpoint, or cut, converted and checkpointed."""

    def __init__(self, ctx: JobContext, segment_job: Job, prepared: Path, *, info: AudioInfo, output: S3Uri,
                 workdir: Path, segment_format: OutputFormat, attempts: list[AttemptRecord]) -> None:
        self.ctx, self.job, self.prepared, self.info = ctx, segment_job, prepared, info
        self.workdir, self.segment_format, self.attempts = workdir, segment_format, attempts
        self.prefix = work_prefix(output)
        self.done = {item.uri.key for item in ctx.storage.list(self.prefix.bucket, self.prefix.key)}
        self.records: dict[int, dict[str, Any]] = {}  # by segment index

    def convert(self, planned: _Planned) -> Path:
        segment = planned.segment
        name = segment_name(segment.index, self.segment_format.name)
        checkpoint = S3Uri(self.prefix.bucket, self.prefix.key + name)
        converted = self.workdir / name
        record: dict[str, Any] = {"index": segment.index, "start_s": segment.start_s, "end_s": segment.end_s,
                                  "duration_in_s": round(segment.end_s - segment.start_s, 6)}
        if checkpoint.key in self.done:
            self.ctx.storage.download(checkpoint, converted)
            record.update(source="checkpoint")
        else:
            piece = cut_segment(self.prepared, segment, self.workdir / f"in-{segment.index:04d}",
                                file_format=self.job.file_format, overlap_s=OVERLAP_S, input_args=_raw_args(self.job),
                                info=self.info)
            seg_attempts: list[AttemptRecord] = []
            try:
                conversion = convert_with_retries(
                    self.ctx.calls, self.job, piece, converted, input_s=_piece_seconds(segment, planned.last),
                    audio_content_type=content_type_of(piece), segment=segment.index, attempts=seg_attempts)
            finally:
                self.attempts.extend(seg_attempts)
                piece.unlink(missing_ok=True)
            self.ctx.storage.upload_file(converted, checkpoint, content_type=self.segment_format.content_type,
                                         sha256=sha256_file(converted))
            record.update(source="converted", request_ids=[a.request_id for a in seg_attempts if a.request_id],
                          attempts=len(seg_attempts), duration_out_s=conversion.duration_out_s)
        self.records[segment.index] = record
        return converted


def _piece_seconds(segment: Segment, last: bool) -> float:
    inner_edges = (segment.index > 0) + (not last)
    return segment.end_s - segment.start_s + inner_edges * OVERLAP_S


def delete_work(storage: Storage, output: S3Uri) -> int:
    """Remove a job's segment checkpoints after its commit; return how many were removed."""
    prefix = work_prefix(output)
    removed = 0
    for item in list(storage.list(prefix.bucket, prefix.key)):
        storage.delete(item.uri)
        removed += 1
    return removed
