"""Outputs the pipeline must refuse because of their key alone: its own records, checkpoints and run copies, and keys
too long for what it writes beside them (the layout is ``pipeline.keys``).

An output named like a record or checkpoint would let one job pass for done, have its record deleted by another
job's success, or be stitched into or cleaned up with another job; an output under the runs prefix overwrites a
run's copy; an output whose records pass S3's key limit is converted and paid for but can never commit. ``validate``
refuses these (``pipeline.manifest.load``), and the worker refuses them again before it spends anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.keys import (
    DEFAULT_RUNS_PREFIX,
    LONGEST_DERIVED_SUFFIX,
    MAX_KEY_BYTES,
    RECORD_SUFFIXES,
    WORK_SUFFIX,
)
from pipeline.reasons import Reason
from pipeline.s3uri import S3Uri

__all__ = ["KeyProblem", "MAX_OUTPUT_KEY_BYTES", "output_key_problems", "runs_root_of"]

#: the longest output key whose every derived key still fits S3's limit
MAX_OUTPUT_KEY_BYTES = MAX_KEY_BYTES - len(LONGEST_DERIVED_SUFFIX.encode())


@dataclass(frozen=True)
class KeyProblem:
    """Why an output key is refused: a reason code (``pipeline.reasons``) and a message the user can act on."""

    reason: str
    message: str


def runs_root_of(output: S3Uri, runs_uri: str = "") -> S3Uri:
    """The runs root a run writing ``output`` may use: ``STS_RUNS_URI``, else ``sts-runs`` in the output's bucket
    (a run's default root is in its first output's bucket, so every output bucket is a candidate)."""
    if runs_uri:
        root = S3Uri.parse(runs_uri, require_key=False)
        return S3Uri(root.bucket, root.key.strip("/"))
    return S3Uri(output.bucket, DEFAULT_RUNS_PREFIX)


def _under(uri: S3Uri, root: S3Uri) -> bool:
    if uri.bucket != root.bucket:
        return False
    return not root.key or uri.key == root.key or uri.key.startswith(root.key + "/")


def output_key_problems(output: S3Uri, *, runs_uri: str = "") -> list[KeyProblem]:
    """Every reason the output's key alone is refused (empty when it is fine)."""
    problems: list[KeyProblem] = []
    key = output.key
    for suffix in RECORD_SUFFIXES:
        if key.endswith(suffix):
            problems.append(KeyProblem(Reason.RESERVED_KEY.value, (
                f"ends in {suffix!r}, the name of a record the pipeline writes beside every output (this one would "
                f"belong to s3://{output.bucket}/{key[:-len(suffix)]}); choose a key that does not end in "
                f"{' or '.join(RECORD_SUFFIXES)}")))
    if WORK_SUFFIX in key:
        problems.append(KeyProblem(Reason.RESERVED_KEY.value, (
            f"contains {WORK_SUFFIX!r}, where the pipeline keeps a long job's segment checkpoints (they are read "
            f"back and deleted by that job); choose a key without {WORK_SUFFIX!r}")))
    root = runs_root_of(output, runs_uri)
    if _under(output, root):
        problems.append(KeyProblem(Reason.RESERVED_KEY.value, (
            f"lies under the runs prefix s3://{root.bucket}/{root.key + '/' if root.key else ''}, where each run keeps "
            "a copy of its manifests; write outputs elsewhere (or point STS_RUNS_URI elsewhere)")))
    size = len(key.encode("utf-8"))
    if size > MAX_OUTPUT_KEY_BYTES:
        problems.append(KeyProblem(Reason.KEY_TOO_LONG.value, (
            f"the key is {size:,} bytes (UTF-8); the pipeline writes keys up to {len(LONGEST_DERIVED_SUFFIX)} bytes "
            f"longer beside it (K{LONGEST_DERIVED_SUFFIX}) and S3 takes at most {MAX_KEY_BYTES:,}, so shorten it "
            f"to at most {MAX_OUTPUT_KEY_BYTES:,} bytes")))
    return problems
