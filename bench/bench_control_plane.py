"""Control plane at scale: enqueue 10,000 jobs (goal <= 10 s) and reconcile a run of 100,000 records (goal <= 60 s).

    python -m bench.bench_control_plane [--jobs 10000] [--records 100000]

S3 is moto's server, seeded in-process with three finished synthetic runs (``bench.run_data``): 1,000 jobs that a
10,000-line manifest re-submits, a 100,000-record run (10 shards), and a 5,000-record run small enough to reconcile
through moto in the time budget.

- Enqueue: ``load_manifests`` (validation) + ``pipeline.loader.enqueue`` (S3 listing, run state, one Celery message
  per job) on a 10,000-line manifest; the listing is also timed alone.
- Reconcile: ``pipeline.reconcile.reconcile`` over the 100,000-record run with S3 answered from memory
  (``pipeline.storage.memory``): the reconciler's own cost. Through moto it is bounded by moto: moto's LIST re-reads and
  re-sorts the whole bucket on every page, so its pages get slower as the bucket grows. moto's rates are measured
  alone (LIST s/page at both bucket sizes, GET/s and PUT/s), the 5,000-record run is reconciled through moto, and
  the 100,000-record time through moto is projected from the rates.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench.common import s3_client
from bench.report import BenchResult, Figure, Headline
from bench.run_data import SyntheticRun
from pipeline.config import Settings
from pipeline.local.services import LocalStack, Service, free_port
from pipeline.manifest.load import load_manifests, parse_manifest
from pipeline.report.reconcile import reconcile
from pipeline.run.submit import enqueue
from pipeline.states import JobState
from pipeline.storage.memory import MemoryS3
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs
from workers.app import create_app

T = TypeVar("T")
QUEUE = "bench-control-plane"
ENQUEUE_GOAL_S = 10.0
RECONCILE_GOAL_S = 60.0
PAGE_SAMPLE = 5
GET_SAMPLE = 1000
PUT_SAMPLE = 500
GET_THREADS = 10  # boto3's default connection pool: what the reconciler gets from Storage.from_settings
PUT_THREADS = 16
PINGS = 1000


def timed(call: Callable[[], T]) -> tuple[T, float]:
    mark = time.monotonic()
    value = call()
    return value, time.monotonic() - mark


def start_seeded_s3(stack: LocalStack, runs: list[SyntheticRun]) -> Service:
    """moto's server with ``runs`` already in it, registered with the stack (so stopped with it)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.seeded_s3", "--port", str(port)]
    for run in runs:
        argv += ["--run", run.bucket, run.prefix, str(run.shards), str(run.jobs_per_shard)]
    service = Service("s3", argv, stack.env(), stack.workdir / "s3.log", port=port).start(ready_timeout_s=600)
    stack.services.append(service)
    stack.s3_port = port
    return service


def seeding_s(stack: LocalStack) -> float | None:
    """How long the seeded S3 server took to put its objects in, from its log."""
    found = re.search(r"seeded (\d+) objects in ([\d.]+) s", stack.service("s3").log_path.read_text(errors="replace"))
    return float(found.group(2)) if found else None


def measure_enqueue(stack: LocalStack, storage: Storage, manifest: Path) -> dict[str, Any]:
    settings = Settings(broker_url=stack.redis_url, queue=QUEUE, s3_endpoint_url=stack.s3_url)
    client = redis.Redis.from_url(stack.redis_url)
    shards, validate_s = timed(lambda: load_manifests([manifest]))
    outputs = [e.output for shard in shards for e in shard.entries]
    presence, scan_s = timed(lambda: scan_outputs(storage, outputs))
    report, enqueue_s = timed(lambda: enqueue(create_app(settings), storage, client, shards, run_id="bench-enqueue"))
    queued = int(client.llen(QUEUE))
    _, pings_s = timed(lambda: [client.ping() for _ in range(PINGS)])
    client.close()
    return {"lines": len(outputs), "problems": sum(len(s.problems) for s in shards), "validate_s": validate_s,
            "scan_s": scan_s, "already_done": sum(1 for p in presence.values() if p.provenance),
            "enqueue_s": enqueue_s, "enqueued": report.enqueued, "skipped": report.skipped, "in_queue": queued,
            "redis_rtt_ms": 1000 * pings_s / PINGS}


def list_rate(storage: Storage, bucket: str, prefix: str) -> float:
    """Seconds per LIST page (1,000 keys) under ``prefix``, from up to PAGE_SAMPLE pages."""
    paginator = storage.client.get_paginator("list_objects_v2")
    pages = 0
    mark = time.monotonic()
    for _ in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
        pages += 1
        if pages >= PAGE_SAMPLE:
            break
    return (time.monotonic() - mark) / max(1, pages)


def get_rate(stack: LocalStack, bucket: str, keys: list[str]) -> float:
    """GETs a second with GET_THREADS threads sharing one client (as the reconciler does)."""
    client = s3_client(stack, pool=GET_THREADS)
    mark = time.monotonic()
    with ThreadPoolExecutor(GET_THREADS) as pool:
        list(pool.map(lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read(), keys))
    return len(keys) / (time.monotonic() - mark)


def put_rate(stack: LocalStack, bucket: str, body: bytes) -> float:
    """PUTs a second over HTTP with PUT_THREADS threads, a client each: how fast records could be written here."""
    local = threading.local()

    def put(n: int) -> None:
        if not hasattr(local, "client"):
            local.client = s3_client(stack, pool=2)
        local.client.put_object(Bucket=bucket, Key=f"put/{n:06d}.json", Body=body)

    s3_client(stack).create_bucket(Bucket=bucket)
    mark = time.monotonic()
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(put, range(PUT_SAMPLE)))
    return PUT_SAMPLE / (time.monotonic() - mark)


def reconcile_run(storage: Storage, run: SyntheticRun) -> dict[str, Any]:
    """Parse the run's manifests, then reconcile it without and with reading the provenance records."""
    shards, parse_s = timed(lambda: [parse_manifest(run.manifest(s), run.shard_name(s)) for s in range(run.shards)])
    _, lean_s = timed(lambda: reconcile(storage, shards, fetch_records=False))
    cpu_mark = time.process_time()
    report, full_s = timed(lambda: reconcile(storage, shards))
    counts = report.totals().counts
    return {"jobs": run.jobs, "parse_s": parse_s, "lean_s": lean_s, "full_s": full_s,
            "full_cpu_s": time.process_time() - cpu_mark, "succeeded": counts[JobState.SUCCEEDED],
            "failed": counts[JobState.FAILED], "rejected": counts[JobState.REJECTED],
            "credits": report.totals().credits}


def pages_of(run: SyntheticRun) -> int:
    """LIST pages of one pass over the run's output directories (audio + record of each success, record else)."""
    per_shard = sum(2 if run.outcome(i) == "succeeded" else 1 for i in range(run.jobs_per_shard))
    return run.shards * -(-per_shard // 1000)


def figures(enq: dict[str, Any], memory: dict[str, Any], moto_small: dict[str, Any], rates: dict[str, float],
            big: SyntheticRun, small: SyntheticRun) -> list[Figure]:
    total = enq["validate_s"] + enq["enqueue_s"]
    enqueue_table = Figure(f"Enqueue {enq['lines']:,} jobs (manifest re-submitted: {enq['already_done']:,} already "
                           "committed)", ["step", "s", "goal"])
    enqueue_table.add("validate: load_manifests", round(enq["validate_s"], 2), None)
    enqueue_table.add("S3 listing alone: scan_outputs", round(enq["scan_s"], 2), None)
    enqueue_table.add(f"enqueue: listing + run state + {enq['enqueued']:,} messages", round(enq["enqueue_s"], 2), None)
    enqueue_table.add("validate + enqueue", round(total, 2), f"<= {ENQUEUE_GOAL_S:.0f}")
    enqueue_table.notes.append(f"{enq['in_queue']:,} messages in the queue afterwards, {enq['skipped']:,} skipped; "
                               "the CLI also stores the manifest in S3 (one PUT), not timed here")
    per_message_ms = 1000 * (enq["enqueue_s"] - enq["scan_s"]) / max(1, enq["enqueued"])
    enqueue_table.notes.append(
        f"{per_message_ms:.2f} ms per message; a Redis round trip (PING) takes {enq['redis_rtt_ms']:.2f} ms here: "
        "kombu publishes each message with its own LPUSH round trip, and Celery builds each message (argsrepr) "
        "in Python, so the loader is bound by round trips and per-message CPU")

    failures = big.jobs - memory["succeeded"]
    lean_gets, full_gets = failures, big.jobs
    big_pages = pages_of(big)
    moto_lean = big_pages * rates["list_s_big"] + lean_gets / rates["get_per_s"]
    moto_full = moto_lean + memory["succeeded"] / rates["get_per_s"]
    rec = Figure(f"Reconcile a run of {big.jobs:,} records ({big.shards} shards; {memory['succeeded']:,} succeeded, "
                 f"{memory['failed']:,} failed, {memory['rejected']:,} rejected)", ["how", "s", "goal"])
    rec.add(f"parse the {big.shards} manifests ({big.jobs:,} lines)", round(memory["parse_s"], 2), None)
    rec.add(f"reconcile, S3 from memory, fetch_records=False ({big_pages} pages, {lean_gets:,} GETs)",
            round(memory["lean_s"], 2), None)
    rec.add(f"reconcile, S3 from memory, fetch_records=True ({full_gets:,} GETs)", round(memory["full_s"], 2),
            f"<= {RECONCILE_GOAL_S:.0f}")
    rec.add(f"reconcile through moto, {small.jobs:,}-record run, fetch_records=False", round(moto_small["lean_s"], 2),
            None)
    rec.add(f"reconcile through moto, {small.jobs:,}-record run, fetch_records=True", round(moto_small["full_s"], 2),
            None)
    rec.add(f"projected through moto, {big.jobs:,} records, fetch_records=False", round(moto_lean, 1),
            f"<= {RECONCILE_GOAL_S:.0f}")
    rec.add(f"projected through moto, {big.jobs:,} records, fetch_records=True", round(moto_full, 1),
            f"<= {RECONCILE_GOAL_S:.0f}")
    rec.notes.append(f"in memory the reconcile used {memory['full_cpu_s']:.1f} s of CPU in {memory['full_s']:.1f} s "
                     "of wall time")
    rec.notes.append("projection = pages x moto's s/page at this bucket size + GETs / moto's GET/s (rates below)")
    small_pages = pages_of(small)
    rec.notes.append(f"check of the projection on the small run: {small_pages} pages x {rates['list_s_small']:.3f} s "
                     f"+ {small.jobs:,} GETs / {rates['get_per_s']:.0f}/s = "
                     f"{small_pages * rates['list_s_small'] + small.jobs / rates['get_per_s']:.1f} s "
                     f"(measured {moto_small['full_s']:.1f} s)")

    moto = Figure("moto's S3 server alone (what bounds anything that talks to it here)", ["operation", "rate"])
    moto.add(f"LIST, bucket of {sum(1 for _ in small.objects()):,} keys", f"{rates['list_s_small']:.3f} s/page")
    moto.add(f"LIST, bucket of {2 * memory['succeeded'] + failures:,} keys", f"{rates['list_s_big']:.3f} s/page")
    moto.add(f"GET of a provenance record, {GET_THREADS} threads", f"{rates['get_per_s']:.0f} /s")
    moto.add(f"PUT of a 2 KB record over HTTP, {PUT_THREADS} threads", f"{rates['put_per_s']:.0f} /s")
    moto.notes.append(f"writing the {big.jobs:,} records over HTTP would take ~{big.jobs / rates['put_per_s']:.0f} s "
                      "at that rate: they are seeded into moto's backend before it serves (bench/seeded_s3.py, "
                      f"{rates['seed_s']} s for all three runs' objects)")
    return [enqueue_table, rec, moto]


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="lines of the manifest to enqueue")
    parser.add_argument("--records", type=int, default=100_000, help="records of the run to reconcile")
    parser.add_argument("--check-records", type=int, default=5_000, help="records of the run reconciled via moto")
    args = parser.parse_args(argv)
    started = time.monotonic()
    resubmitted = SyntheticRun("bench-cp-enqueue", "enqueue", 1, args.jobs // 10)
    big = SyntheticRun("bench-cp-run", "run", 10, args.records // 10)
    small = SyntheticRun("bench-cp-check", "check", 1, args.check_records)
    with tempfile.TemporaryDirectory(prefix="bench-control-plane-") as tmp, \
            LocalStack(workdir=Path(tmp) / "stack") as stack:
        stack.start_redis()
        start_seeded_s3(stack, [resubmitted, big, small])
        storage = Storage(s3_client(stack, pool=GET_THREADS))
        manifest = Path(tmp) / "enqueue.jsonl"
        manifest.write_bytes(SyntheticRun(resubmitted.bucket, resubmitted.prefix, 1, args.jobs).manifest(0))
        enq = measure_enqueue(stack, storage, manifest)
        record_key = next(key for key, _ in big.objects() if key.endswith(".provenance.json"))
        prefix = record_key.rsplit("/", 1)[0] + "/"
        keys = [key for key, _ in small.objects() if key.endswith(".json")][:GET_SAMPLE]
        rates = {"list_s_big": list_rate(storage, big.bucket, prefix),
                 "list_s_small": list_rate(storage, small.bucket, f"{small.prefix}/"),
                 "get_per_s": get_rate(stack, small.bucket, keys),
                 "put_per_s": put_rate(stack, "bench-cp-put", json.dumps({"x": "y" * 2000}).encode())}
        moto_small = reconcile_run(storage, small)
        rates["seed_s"] = seeding_s(stack)
    in_memory = MemoryS3()
    in_memory.seed(big.bucket, big.objects())
    memory = reconcile_run(Storage(in_memory), big)
    enqueue_s = enq["validate_s"] + enq["enqueue_s"]
    heads = [Headline(f"validate + enqueue {enq['lines']:,} jobs", f"{enqueue_s:.1f} s", f"<= {ENQUEUE_GOAL_S:.0f} s",
                      enqueue_s <= ENQUEUE_GOAL_S),
             Headline(f"reconcile {big.jobs:,} records, S3 from memory", f"{memory['full_s']:.1f} s",
                      f"<= {RECONCILE_GOAL_S:.0f} s", memory["full_s"] <= RECONCILE_GOAL_S),
             Headline(f"parse + reconcile {big.jobs:,} records, S3 from memory",
                      f"{memory['parse_s'] + memory['full_s']:.1f} s", f"<= {RECONCILE_GOAL_S:.0f} s",
                      memory["parse_s"] + memory["full_s"] <= RECONCILE_GOAL_S)]
    result = BenchResult("control_plane", figures(enq, memory, moto_small, rates, big, small), heads,
                         raw={"enqueue": enq, "reconcile_memory": memory, "reconcile_moto_small": moto_small,
                              "moto_rates": rates, "args": vars(args)})
    return result.finish(started)


if __name__ == "__main__":
    main()
