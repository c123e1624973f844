"""Dataset nights at scale: ``manifest from-prefix`` over 100,000 listed keys (goal < 200 MB peak RSS) and
``export`` of 10,000 rows per format (rows/s and peak RSS; memory must stay flat).

    python -m bench.bench_dataset [--keys 100000] [--rows 10000]

S3 is the in-memory double (``pipeline.storage.memory``), seeded in-process, so the figures are the pipeline's own
cost. Each measurement runs in a process of its own, so each peak RSS (``ru_maxrss``) is that measurement's alone;
the RSS after seeding is shown beside it (the seeded S3 lives in the same process), and the growth over it is what
the code under test held. A second from-prefix of the same listing must give byte-identical shards, and a sample of
the shards (the first and the last) is validated.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import BenchResult, Figure, Headline
from pipeline.s3uri import S3Uri
from pipeline.storage.memory import MemoryS3
from pipeline.storage.s3 import Storage

# each part imports only what its command would (the export's pyarrow stays out of the from-prefix figure)
RSS_GOAL_MB = 200.0
ROOT = S3Uri("bench-out", "sts-runs")
VOICES = ("BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9", "vK7n2rg6OeynABb4ilbv", "xmXfcXc3zRgo3GlCx0pq")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _storage() -> tuple[MemoryS3, Storage]:
    s3 = MemoryS3()
    for bucket in ("bench-in", "bench-out"):
        s3.create_bucket(Bucket=bucket)
    return s3, Storage(s3)


def part_prefix(keys: int) -> dict[str, Any]:
    """from-prefix over ``keys`` objects (1 in 20 not audio), twice, with 4 voices × 2 seeds."""
    from pipeline.dataset.prefix import PrefixOptions, write_prefix_shards
    from pipeline.manifest.load import load_manifests

    s3, storage = _storage()
    body = b"RIFF" + b"\0" * 60
    s3.seed("bench-in", ((f"clips/{n // 1000:03d}/clip-{n:06d}.{'txt' if n % 20 == 0 else 'wav'}", body)
                         for n in range(keys)))
    seeded = _rss_mb()
    options = PrefixOptions(voices=VOICES, seeds=(1, 2), output_prefix="s3://bench-out/night",
                            shard_size=1000)
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        started = time.monotonic()
        first = write_prefix_shards(storage, S3Uri("bench-in", "clips"), options, Path(tmp) / "a")
        seconds = time.monotonic() - started
        peak = _peak_mb()
        again = write_prefix_shards(storage, S3Uri("bench-in", "clips"), options, Path(tmp) / "b")
        same = [_digest(p) for p in first.shards] == [_digest(p) for p in again.shards]
        sample = load_manifests([first.shards[0], first.shards[-1]])
        problems = sum(len(shard.problems) for shard in sample)
    return {"keys": keys, "lines": first.lines, "jobs": first.jobs, "shards": len(first.shards),
            "not_audio": first.not_audio, "seconds": round(seconds, 2), "keys_per_s": round(keys / seconds),
            "rss_seeded_mb": round(seeded, 1), "peak_mb": round(peak, 1), "identical": same,
            "sample_problems": problems}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _seed_run(s3: MemoryS3, storage: Storage, rows: int) -> None:
    """A run of ``rows`` committed jobs: 0.5 s WAV inputs and pcm_16000 outputs (one shared body each)."""
    import numpy as np
    import soundfile as sf

    from pipeline.manifest.load import parse_manifest
    from pipeline.run.stored import save_run
    from pipeline.storage.examples import example_identity, example_provenance
    from pipeline.storage.records import commit

    buffer = io.BytesIO()
    sf.write(buffer, (np.sin(np.arange(8000) / 6) * 8000).astype(np.int16), 16000, format="WAV")
    source, converted = buffer.getvalue(), (np.sin(np.arange(8000) / 4) * 8000).astype("<i2").tobytes()
    digest = hashlib.sha256(converted).hexdigest()
    lines = [{"input": f"s3://bench-in/clips/c{n:06d}.wav", "voice_id": VOICES[n % 4],
              "output_format": "pcm_16000", "output": f"s3://bench-out/ds/{n // 1000:03d}/c{n:06d}.pcm",
              "id": f"c{n:06d}"} for n in range(rows)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    shard = parse_manifest(data, "bench.jsonl")
    save_run(storage, ROOT, "bench-run", {"output_prefix": None}, {shard.name: data})
    s3.seed("bench-in", ((S3Uri.parse(e.job.input).key, source) for e in shard.entries))
    s3.seed("bench-out", ((S3Uri.parse(e.output).key, converted) for e in shard.entries))
    for entry in shard.entries:
        identity = example_identity(job_id=entry.job_id, run_id="bench-run", shard=shard.name, line=entry.line,
                                    input_uri=entry.job.input, output_uri=entry.output, manifest_id=entry.job.id)
        commit(storage, S3Uri.parse(entry.output), example_provenance(
            identity, duration_s=0.5, output_format="pcm_16000", params=entry.job.request_params(),
            output_sha256=digest))


def part_export(rows: int, fmt: str) -> dict[str, Any]:
    from pipeline.dataset.export import export_run
    from pipeline.dataset.sink import open_sink

    s3, storage = _storage()
    _seed_run(s3, storage, rows)
    seeded = _rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        sink = open_sink(str(Path(tmp) / fmt), storage)
        started = time.monotonic()
        summary = export_run(storage, ROOT, "bench-run", fmt, sink)
        seconds = time.monotonic() - started
        sink.close()
        size = sum(p.stat().st_size for p in (Path(tmp) / fmt).rglob("*") if p.is_file())
    return {"format": fmt, "rows": summary.rows, "files": len(summary.files), "seconds": round(seconds, 2),
            "rows_per_s": round(summary.rows / seconds), "mb_written": round(size / 1e6, 1),
            "rss_seeded_mb": round(seeded, 1), "peak_mb": round(_peak_mb(), 1)}


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.bench_dataset", *args], capture_output=True, text=True,
                          check=True, timeout=900)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def figures(prefix: dict[str, Any], exports: list[dict[str, Any]]) -> list[Figure]:
    listing = Figure("from-prefix: 4 voices × 2 seeds, shards of 1,000 lines",
                     ["keys listed", "lines", "jobs", "shards", "s", "keys/s", "RSS seeded MB", "peak RSS MB",
                      "same shards twice", "sample problems"])
    listing.add(prefix["keys"], prefix["lines"], prefix["jobs"], prefix["shards"], prefix["seconds"],
                prefix["keys_per_s"], prefix["rss_seeded_mb"], prefix["peak_mb"],
                "yes" if prefix["identical"] else "NO", prefix["sample_problems"])
    export = Figure("export: 0.5 s clips, pcm_16000 outputs wrapped as WAV",
                    ["format", "rows", "files", "s", "rows/s", "MB written", "RSS seeded MB", "peak RSS MB"])
    for item in exports:
        export.add(item["format"], item["rows"], item["files"], item["seconds"], item["rows_per_s"],
                   item["mb_written"], item["rss_seeded_mb"], item["peak_mb"])
    export.notes.append("peak RSS includes the seeded in-memory S3 (RSS seeded); the growth over it is the export's")
    return [listing, export]


def main(argv: list[str] | None = None) -> BenchResult | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--part", choices=["prefix", "hf", "webdataset", "nemo"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:  # a child: one measurement, its figures as the last line of stdout
        print(json.dumps(part_prefix(args.keys) if args.part == "prefix" else part_export(args.rows, args.part)))
        return None
    started = time.monotonic()
    prefix = _child("--part", "prefix", "--keys", str(args.keys))
    exports = [_child("--part", fmt, "--rows", str(args.rows)) for fmt in ("hf", "webdataset", "nemo")]
    worst = max(item["peak_mb"] - item["rss_seeded_mb"] for item in exports)
    headlines = [
        Headline(f"from-prefix peak RSS, {args.keys:,} keys", f"{prefix['peak_mb']:.0f} MB", f"< {RSS_GOAL_MB:.0f} MB",
                 prefix["peak_mb"] < RSS_GOAL_MB and prefix["identical"] and not prefix["sample_problems"]),
        Headline(f"export throughput, {args.rows:,} rows (hf)", f"{exports[0]['rows_per_s']} rows/s", "-", None),
        Headline("export RSS growth over the seeded S3 (worst format)", f"{worst:.0f} MB", f"< {RSS_GOAL_MB:.0f} MB",
                 worst < RSS_GOAL_MB),
    ]
    return BenchResult("dataset", figures(prefix, exports), headlines,
                       raw={"prefix": prefix, "exports": exports}).finish(started)


if __name__ == "__main__":
    main()
