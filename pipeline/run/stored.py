"""Where a run keeps its manifests and settings in S3, so it can be found again from any machine.

    <runs root>/<run_id>/run.json              run id, created, output prefix, budget, shard names, package version
    <runs root>/<run_id>/manifests/<shard>     a byte-exact copy of each manifest as submitted
    <runs root>/<run_id>/control.json          what operators did to the run (cancel; ``pipeline.run.control``)
    <runs root>/<run_id>/results.jsonl         one line per manifest line; errors.jsonl the non-successes
                                               (``pipeline.report.results``)

The runs root is ``STS_RUNS_URI``, or ``s3://<first output bucket>/sts-runs``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.keys import DEFAULT_RUNS_PREFIX
from pipeline.manifest.load import ManifestLimits, ManifestProblem, Shard, parse_manifest
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r} must be 1-100 letters, digits, '.', '_' or '-'")
    return run_id


def runs_root(settings: Settings, output_bucket: str | None = None) -> S3Uri:
    if settings.runs_uri:
        root = S3Uri.parse(settings.runs_uri, require_key=False)
        return S3Uri(root.bucket, root.key.rstrip("/"))
    if output_bucket is None:
        raise ConfigError("set STS_RUNS_URI (s3://bucket/prefix) so runs can be found by id")
    return S3Uri(output_bucket, DEFAULT_RUNS_PREFIX)


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    info: dict[str, Any]
    manifests: dict[str, bytes]  # shard name -> bytes as submitted


def _join(root: S3Uri, *parts: str) -> S3Uri:
    key = "/".join(p for p in (root.key, *parts) if p)
    return S3Uri(root.bucket, key)


def run_prefix(root: S3Uri, run_id: str) -> S3Uri:
    """``<runs root>/<run_id>``: where a run's copy, control record and result files live."""
    return _join(root, check_run_id(run_id))


def save_run(storage: Storage, root: S3Uri, run_id: str, info: dict[str, Any], manifests: dict[str, bytes]) -> None:
    """Store the manifests, then run.json (the marker that the run's copy is complete)."""
    for name, data in manifests.items():
        storage.put_bytes(_join(root, run_id, "manifests", name), data, content_type="text/plain; charset=utf-8")
    storage.put_json(_join(root, run_id, "run.json"), {**info, "run_id": run_id, "shards": sorted(manifests)})


def load_run(storage: Storage, root: S3Uri, run_id: str) -> StoredRun:
    found = storage.get_json(_join(root, check_run_id(run_id), "run.json"))
    if found is None:
        raise ConfigError(f"no run {run_id!r} under {root}: check the id and STS_RUNS_URI")
    info, _ = found
    manifests = {name: storage.get_bytes(_join(root, run_id, "manifests", name)) for name in info["shards"]}
    return StoredRun(run_id, info, manifests)


def shards_of_run(stored: StoredRun, *, output_prefix: str | None = None,
                  limits: ManifestLimits | None = None) -> list[Shard]:
    """Parse a stored run's manifests as they were submitted (its own output prefix unless one is given).

    Lines the account's preflight refused at submit time (``refused_lines`` in run.json) were never enqueued: they
    are problems of their shard, so reconcile counts them ``invalid``, not ``missing``.
    """
    prefix = output_prefix if output_prefix is not None else stored.info.get("output_prefix")
    refused: dict[str, dict[int, dict[str, Any]]] = {}
    for item in stored.info.get("refused_lines") or []:
        refused.setdefault(str(item["shard"]), {})[int(item["line"])] = item
    shards = []
    for name, data in sorted(stored.manifests.items()):
        shard = parse_manifest(data, name, output_prefix=prefix, limits=limits)
        lines = refused.get(name, {})
        if lines:
            shard = replace(shard, entries=[e for e in shard.entries if e.line not in lines],
                            problems=[*shard.problems, *(ManifestProblem(shard.label, n, str(item["field"]),
                                                                          f"refused by the account at submit: "
                                                                          f"{item['message']}")
                                                         for n, item in sorted(lines.items()))])
        shards.append(shard)
    return shards
