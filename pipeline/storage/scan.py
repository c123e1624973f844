"""What S3 says about a set of outputs, read with paged listings (one LIST per 1,000 keys, not one HEAD per job)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.s3uri import S3Uri
from pipeline.storage.records import FAILURE_SUFFIX, PROVENANCE_SUFFIX
from pipeline.storage.s3 import Storage


@dataclass
class OutputPresence:
    """Which of a job's objects exist in S3."""

    output: bool = False
    provenance: bool = False
    failure: bool = False


def _directory(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def scan_outputs(storage: Storage, outputs: Iterable[str]) -> dict[str, OutputPresence]:
    """For each output URI, whether the audio, its provenance and its failure record exist.

    Outputs are grouped by bucket and directory; each directory is listed once, in pages.
    """
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    result: dict[str, OutputPresence] = {}
    for uri in outputs:
        parsed = S3Uri.parse(uri)
        wanted[(parsed.bucket, _directory(parsed.key))].add(parsed.key)
        result[uri] = OutputPresence()
    for (bucket, directory), keys in wanted.items():
        for item in storage.list(bucket, directory):
            key = item.uri.key
            if key in keys:
                result[f"s3://{bucket}/{key}"].output = True
            elif key.endswith(PROVENANCE_SUFFIX) and key[: -len(PROVENANCE_SUFFIX)] in keys:
                result[f"s3://{bucket}/{key[: -len(PROVENANCE_SUFFIX)]}"].provenance = True
            elif key.endswith(FAILURE_SUFFIX) and key[: -len(FAILURE_SUFFIX)] in keys:
                result[f"s3://{bucket}/{key[: -len(FAILURE_SUFFIX)]}"].failure = True
    return result
