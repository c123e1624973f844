"""A plan before spending: jobs, what is already done, input audio seconds, estimated credits and wall time.

Inputs are probed where they lie: ffprobe reads a presigned URL with HTTP range requests, so a header (and for some
formats a little more) is read, never the whole file. Estimates start from the configured credits per second of
audio and are refined by what committed jobs of the same manifests actually cost and took.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.audio.ffmpeg import probe_url_duration
from pipeline.config import Settings
from pipeline.storage.scan import scan_outputs
from pipeline.manifest.load import ManifestEntry, Shard
from pipeline.errors import RecordError
from pipeline.storage.records import ProvenanceRecord, provenance_uri
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage

#: PCM_S16LE_16 inputs have no header: their duration is their size over 32,000 bytes a second
RAW_PCM_BYTES_PER_SECOND = 32000
PROBE_THREADS = 16
PROBE_TIMEOUT_S = 60
#: committed jobs read back to learn real cost and time per audio second
HISTORY_SAMPLE = 50
#: seconds of API time per second of audio when nothing has been measured yet (a conservative guess)
DEFAULT_API_S_PER_AUDIO_S = 0.3
DEFAULT_API_FIXED_S = 1.0


@dataclass
class ShardPlan:
    name: str
    jobs: int = 0
    skipped: int = 0
    to_run: int = 0
    audio_seconds: float = 0.0
    estimated_credits: float = 0.0
    estimated_seconds: float = 0.0
    unprobed: list[str] = field(default_factory=list)  # "line N: why" for inputs that could not be probed
    #: estimated credits of each line to run (what the preflight sets against the credits left); not in to_dict
    credits_by_line: dict[int, float] = field(default_factory=dict, repr=False)


@dataclass
class Plan:
    jobs: int
    skipped: int
    to_run: int
    audio_seconds: float
    estimated_credits: float
    estimated_seconds: float
    concurrency: int
    credits_per_second: float
    api_seconds_per_audio_second: float
    basis: str  # "configured" or "history (N jobs)"
    shards: list[ShardPlan]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for shard in data["shards"]:
            shard.pop("credits_by_line")
        return data


def probe_seconds(storage: Storage, uri: str) -> float:
    """Duration of an S3 input in seconds, read with ranged requests (ffprobe on a presigned URL)."""
    parsed = S3Uri.parse(uri)
    if parsed.key.lower().endswith((".pcm", ".raw")):
        info = storage.require(parsed)
        return info.size_bytes / RAW_PCM_BYTES_PER_SECOND
    url = storage.client.generate_presigned_url("get_object", Params={"Bucket": parsed.bucket, "Key": parsed.key},
                                                ExpiresIn=600)
    return probe_url_duration(url, timeout_s=PROBE_TIMEOUT_S)


def _history(storage: Storage, committed: list[str]) -> tuple[float, float, int] | None:
    """(credits per audio second, API seconds per audio second, jobs read) from committed provenance records."""
    credits = api_s = audio_s = 0.0
    read = 0
    for uri in committed[:HISTORY_SAMPLE]:
        found = storage.get_json(provenance_uri(S3Uri.parse(uri)))
        if found is None:
            continue
        try:
            record = ProvenanceRecord.from_dict(found[0])
        except RecordError:
            continue
        seconds = float(record.input.get("duration_s") or 0)
        if seconds <= 0:
            continue
        credits += record.cost.credits
        api_s += sum(float(a.get("duration_s") or 0) for a in record.attempts if a.get("outcome") == "ok")
        audio_s += seconds
        read += 1
    if not read or audio_s <= 0:
        return None
    return credits / audio_s, api_s / audio_s, read


def make_plan(storage: Storage, shards: Sequence[Shard], settings: Settings, *, concurrency: int) -> Plan:
    """Plan the valid entries of ``shards`` without converting anything."""
    entries = [e for shard in shards for e in shard.entries]
    presence = scan_outputs(storage, (e.output for e in entries))
    committed = [uri for uri, seen in presence.items() if seen.provenance]
    learned = _history(storage, committed)
    learned_rate = learned[0] if learned and learned[0] > 0 else None
    api_s_per_s = learned[1] if learned and learned[1] > 0 else DEFAULT_API_S_PER_AUDIO_S
    basis = f"history ({learned[2]} jobs)" if learned else "configured"
    todo = [e for e in entries if not presence[e.output].provenance]

    def probe(entry: ManifestEntry) -> tuple[ManifestEntry, float | None, str | None]:
        try:
            return entry, probe_seconds(storage, entry.job.input), None
        except Exception as error:  # noqa: BLE001 — a probe failure is reported per line, never fatal
            return entry, None, f"line {entry.line}: {entry.job.input}: {error}"

    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        probed = list(pool.map(probe, todo))
    plans = {shard.name: ShardPlan(shard.name, jobs=len(shard.entries)) for shard in shards}
    for entry in entries:
        if presence[entry.output].provenance:
            plans[entry.shard].skipped += 1
    for entry, seconds, problem in probed:
        shard_plan = plans[entry.shard]
        shard_plan.to_run += 1
        if seconds is None:
            shard_plan.unprobed.append(problem or "unknown")
            continue
        shard_plan.audio_seconds += seconds
        credits = seconds * (learned_rate or settings.credits_rate(entry.job.model_id))
        shard_plan.estimated_credits += credits
        shard_plan.credits_by_line[entry.line] = credits
        shard_plan.estimated_seconds += DEFAULT_API_FIXED_S + seconds * api_s_per_s
    cap = max(1, concurrency)
    for shard_plan in plans.values():
        shard_plan.estimated_seconds /= cap
        shard_plan.audio_seconds = round(shard_plan.audio_seconds, 3)
        shard_plan.estimated_credits = round(shard_plan.estimated_credits, 1)
        shard_plan.estimated_seconds = round(shard_plan.estimated_seconds, 1)
    shard_list = list(plans.values())
    return Plan(
        jobs=sum(p.jobs for p in shard_list), skipped=sum(p.skipped for p in shard_list),
        to_run=sum(p.to_run for p in shard_list),
        audio_seconds=round(sum(p.audio_seconds for p in shard_list), 3),
        estimated_credits=round(sum(p.estimated_credits for p in shard_list), 1),
        estimated_seconds=round(sum(p.estimated_seconds for p in shard_list), 1),
        concurrency=cap, credits_per_second=round(learned_rate or settings.credits_per_second, 4),
        api_seconds_per_audio_second=round(api_s_per_s, 4), basis=basis, shards=shard_list,
    )
