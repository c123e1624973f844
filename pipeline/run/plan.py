"""A plan before spending: jobs, what is already done, input audio seconds, estimated credits and wall time.

Inputs are probed where they lie, and ffprobe is never handed a URL: ranged GETs through ``Storage`` fetch the
object's head (and, for containers that keep their length or index at the end, its tail) into a local sparse file
of the object's size, and the sandboxed ffprobe of ``pipeline.audio`` reads that file. Nothing is presigned, so no
signed URL is printed, logged or put on a command line. A plan reads headers and can be lied to; the worker counts
every input's length by decoding it (``pipeline.audio.probe``). Where the header gives no length (an mp3 without a
Xing header, raw AAC), the length is estimated from the size and bitrate and the line is listed as ``estimated``.

Estimates start from the configured credits per second of audio and are refined by what committed jobs of the same
manifests actually cost and took.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.audio.probe import probe
from pipeline.audio.sniff import id3_size, sniff
from pipeline.config import Settings
from pipeline.errors import InputError, RecordError
from pipeline.manifest.load import ManifestEntry, Shard
from pipeline.s3uri import S3Uri
from pipeline.storage.records import ProvenanceRecord, provenance_uri
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs

#: PCM_S16LE_16 inputs have no header: their duration is their size over 32,000 bytes a second
RAW_PCM_BYTES_PER_SECOND = 32000
PROBE_THREADS = 16
#: bytes read from the start of an object: headers, and an mp3's Xing frame after a modest ID3 tag
HEAD_BYTES = 1024 * 1024
#: bytes read from the end, for containers whose length or index may sit there (Ogg's last page, an MP4's moov)
TAIL_BYTES = 4 * 1024 * 1024
TAIL_CONTAINERS = ("ogg", "mov", "caf")
#: an ID3 tag (cover art) longer than the head is skipped with one more read, up to this much
MAX_HEAD_BYTES = 16 * 1024 * 1024
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
    estimated: list[str] = field(default_factory=list)  # "line N: uri: how" for lengths guessed, not read
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
    estimated_inputs: int = 0  # inputs whose length was estimated from size and bitrate (see ShardPlan.estimated)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for shard in data["shards"]:
            shard.pop("credits_by_line")
        return data


@dataclass(frozen=True)
class Probed:
    """An input's length as a plan can know it: read from its header (or a raw file's size), or estimated."""

    seconds: float
    estimated: bool = False
    how: str = "header"


def probe_input(storage: Storage, uri: str) -> Probed:
    """An S3 input's length from ranged reads of its head (and tail) into a local file, probed by the sandbox.

    Raw PCM (``.pcm``/``.raw``) is sized from its length alone. Anything the sandbox refuses (a playlist, text, an
    image) raises its ``InputError``; a container whose length the head and tail do not tell raises ``ValueError``.
    """
    parsed = S3Uri.parse(uri)
    size = storage.require(parsed).size_bytes
    if parsed.key.lower().endswith((".pcm", ".raw")):
        return Probed(size / RAW_PCM_BYTES_PER_SECOND, how="raw size")
    if size == 0:
        raise InputError(f"input {uri} is empty (0 bytes)", reason="empty_input")
    head = storage.get_range(parsed, 0, min(size, HEAD_BYTES) - 1)
    tag = id3_size(head)
    if tag and len(head) < min(size, tag + HEAD_BYTES):  # a long ID3 tag (cover art): read past it
        head = storage.get_range(parsed, 0, min(size, tag + HEAD_BYTES, MAX_HEAD_BYTES) - 1)
    tail = b""
    if sniff(head).demuxer in TAIL_CONTAINERS and size > len(head):
        tail = storage.get_range(parsed, max(len(head), size - TAIL_BYTES), size - 1)
    partial = len(head) + len(tail) < size
    with tempfile.TemporaryDirectory(prefix="sts-plan-") as tmp:
        local = Path(tmp) / "input"
        with local.open("wb") as out:  # sparse: the bytes not read are a hole, the size is the object's
            out.write(head)
            if tail:
                out.seek(size - len(tail))
                out.write(tail)
            out.truncate(size)
        try:
            info = probe(local, label=uri)
        except InputError as error:
            if partial and error.reason == "not_audio" and sniff(head).demuxer is not None:
                raise ValueError(f"its first {len(head)} and last {len(tail)} bytes do not tell its length "
                                 f"(the worker counts it when the job runs)") from None
            raise
    if not info.duration_estimated and info.header_duration_s is not None:
        return Probed(info.header_duration_s)
    if info.bit_rate:
        return Probed(size * 8 / info.bit_rate, estimated=True, how="estimated from its size and bitrate")
    raise ValueError("its header tells neither its length nor its bitrate (the worker counts it when the job runs)")


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


def _probed(entry: ManifestEntry, found: Probed | str) -> tuple[ManifestEntry, Probed | None, str | None]:
    if isinstance(found, str):
        return entry, None, f"line {entry.line}: {entry.job.input}: {found}"
    return entry, found, None


def _once(notes: list[str], note: str) -> None:
    """Add a note unless it is there already (every combination of a fanned-out line shares its input's note)."""
    if not notes or notes[-1] != note:
        notes.append(note)


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

    def probe_once(uri: str) -> Probed | str:
        try:
            return probe_input(storage, uri)
        except Exception as error:  # noqa: BLE001 — a probe failure is reported per line, never fatal
            return str(error)

    # each input is probed once, however many voices × seeds a fanned-out line renders it in (each is billed)
    inputs = list(dict.fromkeys(entry.job.input for entry in todo))
    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        by_input = dict(zip(inputs, pool.map(probe_once, inputs), strict=False))
    probed = [_probed(entry, by_input[entry.job.input]) for entry in todo]
    plans = {shard.name: ShardPlan(shard.name, jobs=len(shard.entries)) for shard in shards}
    for entry in entries:
        if presence[entry.output].provenance:
            plans[entry.shard].skipped += 1
    for entry, found, problem in probed:
        shard_plan = plans[entry.shard]
        shard_plan.to_run += 1
        if found is None:
            _once(shard_plan.unprobed, problem or "unknown")
            continue
        if found.estimated:
            _once(shard_plan.estimated, f"line {entry.line}: {entry.job.input}: {found.how}")
        seconds = found.seconds
        shard_plan.audio_seconds += seconds
        credits = seconds * (learned_rate or settings.credits_rate(entry.job.model_id))
        shard_plan.estimated_credits += credits
        shard_plan.credits_by_line[entry.line] = shard_plan.credits_by_line.get(entry.line, 0.0) + credits
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
        estimated_inputs=sum(len(p.estimated) for p in shard_list),
    )
