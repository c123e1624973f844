"""The S3 keys the pipeline writes for itself: the one place that spells them.

For a job whose output is ``s3://B/K``:

    s3://B/K                        the converted audio (the only key a manifest names)
    s3://B/K.provenance.json        the commit marker (``pipeline.storage.records``)
    s3://B/K.failure.json           a final non-success (``pipeline.storage.records``)
    s3://B/K.work/seg-NNNN.<pcm>    segment checkpoints of a long input (``pipeline.conversion.longform``)

and every run keeps a copy of its manifests under the runs root: ``STS_RUNS_URI``, or
``s3://<first output bucket>/sts-runs`` (``pipeline.run.stored``). An output must never be one of these keys, nor so
long that one of them would pass S3's limit of 1,024 bytes (UTF-8) a key.
"""

from __future__ import annotations

from pipeline.formats import OUTPUT_FORMATS

__all__ = [
    "DEFAULT_RUNS_PREFIX",
    "FAILURE_SUFFIX",
    "LONGEST_DERIVED_SUFFIX",
    "MAX_KEY_BYTES",
    "PROVENANCE_SUFFIX",
    "RECORD_SUFFIXES",
    "WORK_SUFFIX",
    "derived_keys",
    "segment_name",
]

PROVENANCE_SUFFIX = ".provenance.json"
FAILURE_SUFFIX = ".failure.json"
WORK_SUFFIX = ".work/"
DEFAULT_RUNS_PREFIX = "sts-runs"
#: S3's limit on a key, in bytes of its UTF-8 form
MAX_KEY_BYTES = 1024
RECORD_SUFFIXES = (PROVENANCE_SUFFIX, FAILURE_SUFFIX)


def segment_name(index: int, format_name: str) -> str:
    """The name of a segment checkpoint under an output's work prefix."""
    return f"seg-{index:04d}.{format_name}"


#: the longest key tail the pipeline adds to an output key: a checkpoint in the widest PCM format
LONGEST_DERIVED_SUFFIX = max(
    (PROVENANCE_SUFFIX, FAILURE_SUFFIX,
     *(WORK_SUFFIX + segment_name(9999, name) for name in OUTPUT_FORMATS if name.startswith("pcm_"))),
    key=lambda suffix: len(suffix.encode()))


def derived_keys(key: str) -> dict[str, str]:
    """What the pipeline writes beside an output key, by what it is: ``{"provenance record": K.provenance.json,
    "failure record": ..., "work prefix": K.work/}``."""
    return {"provenance record": key + PROVENANCE_SUFFIX, "failure record": key + FAILURE_SUFFIX,
            "work prefix": key + WORK_SUFFIX}
