"""Long recordings: cut at silences, convert the segments in parallel, checkpoint each in S3, stitch once.

Segments are converted inside the job (a thread pool, every request still under the shared limiter) rather than as
separate Celery tasks: the stitch needs every segment on one disk, a chord on Redis is fragile (it can lose its
callback), and the S3 checkpoints already make a retried job convert only what is missing.

Segments are requested as headerless PCM at the output's rate, whatever the job's output format: decoded lossy
segments would carry codec delay into every join, and the result is encoded only once, at the stitch.

Checkpoints for output ``s3://B/K`` live under ``s3://B/K.work/seg-NNNN.<format>`` and are deleted after the commit.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.audio.prepare import content_type_of, to_flac
from pipeline.audio.probe import AudioInfo
from pipeline.audio.segments import Segment, cut_segment, plan_segments, stitch
from pipeline.conversion.calls import AttemptRecord, convert_with_retries, expected_output_s
from pipeline.formats import OUTPUT_FORMATS, PCM_S16LE_16_RATE
from pipeline.keys import WORK_SUFFIX, segment_name
from pipeline.manifest.job import Job
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage, sha256_file

if TYPE_CHECKING:
    from pipeline.conversion.context import JobContext

log = logging.getLogger(__name__)

OVERLAP_S = 0.05
#: inputs the cutter can seek in exactly; others (mp3, AAC, ...) are made FLAC once, instead of decoded from the
#: start for every cut
SEEKABLE_SUFFIXES = (".wav", ".flac")


def work_prefix(output: S3Uri) -> S3Uri:
    return output.child(WORK_SUFFIX)


def _raw_args(job: Job) -> list[str]:
    if job.file_format == "pcm_s16le_16":
        return ["-f", "s16le", "-ar", str(PCM_S16LE_16_RATE), "-ac", "1"]
    return []


def convert_segmented(ctx: JobContext, job: Job, prepared: Path, out: Path, *, info: AudioInfo, output: S3Uri,
                      max_segment_s: float, attempts: list[AttemptRecord]) -> list[dict[str, Any]]:
    """Convert a long input segment by segment, resuming from checkpoints, and stitch the result into ``out``;
    return each segment's record for provenance.

    A piece is its segment plus ``OVERLAP_S`` of context on each inner side, so segments are planned that much
    shorter than ``max_segment_s`` and no request exceeds it.
    """
    output_format = OUTPUT_FORMATS[job.output_format]
    if job.file_format == "other" and prepared.suffix.lower() not in SEEKABLE_SUFFIXES:
        prepared = to_flac(prepared, out.parent / "prepared-for-segments.flac")
    segment_format = OUTPUT_FORMATS[f"pcm_{output_format.sample_rate}"]
    segment_job = job.model_copy(update={"output_format": segment_format.name})
    segments = plan_segments(prepared, max_segment_s=max_segment_s - 2 * OVERLAP_S, input_args=_raw_args(job),
                             info=info)
    prefix = work_prefix(output)
    done = {item.uri.key for item in ctx.storage.list(prefix.bucket, prefix.key)}
    workdir = Path(tempfile.mkdtemp(prefix="segments-", dir=out.parent))
    records: list[dict[str, Any]] = [{} for _ in segments]

    def one(segment: Segment) -> Path:
        name = segment_name(segment.index, segment_format.name)
        checkpoint = S3Uri(prefix.bucket, prefix.key + name)
        converted = workdir / name
        record: dict[str, Any] = {"index": segment.index, "start_s": segment.start_s, "end_s": segment.end_s,
                                  "duration_in_s": round(segment.end_s - segment.start_s, 6)}
        if checkpoint.key in done:
            ctx.storage.download(checkpoint, converted)
            record.update(source="checkpoint")
        else:
            piece = cut_segment(prepared, segment, workdir / f"in-{segment.index:04d}", file_format=job.file_format,
                                overlap_s=OVERLAP_S, input_args=_raw_args(job), info=info)
            seg_attempts: list[AttemptRecord] = []
            try:
                conversion = convert_with_retries(
                    ctx.calls, segment_job, piece, converted, input_s=_piece_seconds(segment, len(segments)),
                    audio_content_type=content_type_of(piece), segment=segment.index, attempts=seg_attempts)
            finally:
                attempts.extend(seg_attempts)
            ctx.storage.upload_file(converted, checkpoint, content_type=segment_format.content_type,
                                    sha256=sha256_file(converted))
            record.update(source="converted", request_ids=[a.request_id for a in seg_attempts if a.request_id],
                          attempts=len(seg_attempts), duration_out_s=conversion.duration_out_s)
        records[segment.index] = record
        return converted

    with ThreadPoolExecutor(max_workers=max(1, ctx.calls.settings.segment_workers)) as pool:
        converted_paths = list(pool.map(one, segments))
    stitch(converted_paths, segments, segment_format=segment_format, output_format=output_format, out=out,
           crossfade_s=OVERLAP_S, time_scale=expected_output_s(job, 1.0))
    return records


def _piece_seconds(segment: Segment, count: int) -> float:
    inner_edges = (segment.index > 0) + (segment.index < count - 1)
    return segment.end_s - segment.start_s + inner_edges * OVERLAP_S


def delete_work(storage: Storage, output: S3Uri) -> int:
    """Remove a job's segment checkpoints after its commit; return how many were removed."""
    prefix = work_prefix(output)
    removed = 0
    for item in list(storage.list(prefix.bucket, prefix.key)):
        storage.delete(item.uri)
        removed += 1
    return removed
