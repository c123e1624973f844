"""moto's S3 server, started with synthetic runs already in it (the control-plane benchmark's S3).

    python -m bench.seeded_s3 --port PORT --run BUCKET PREFIX SHARDS JOBS_PER_SHARD [--run ...]

Writing 100,000 records through HTTP would take minutes here (moto answers on the order of a hundred PUTs a second
on this machine; the benchmark measures it), so the objects go straight into moto's in-memory backend, then the
server starts as ``python -m moto.server`` would. Everything read later goes through HTTP as usual. A line
``seeded N objects in S s`` is printed to the log before the port opens.
"""

from __future__ import annotations

import argparse
import time

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import main as moto_main

from bench.run_data import SyntheticRun


def seed(runs: list[SyntheticRun]) -> int:
    """Put every run's objects into moto's backend for the default account; return how many."""
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    count = 0
    for run in runs:
        if run.bucket not in backend.buckets:
            backend.create_bucket(run.bucket, "us-east-1")
        for key, body in run.objects():
            backend.put_object(run.bucket, key, body, disable_notification=True)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run", nargs=4, action="append", default=[],
                        metavar=("BUCKET", "PREFIX", "SHARDS", "JOBS_PER_SHARD"))
    args = parser.parse_args()
    runs = [SyntheticRun(bucket, prefix, int(shards), int(jobs)) for bucket, prefix, shards, jobs in args.run]
    mark = time.monotonic()
    count = seed(runs)
    print(f"seeded {count} objects in {time.monotonic() - mark:.1f} s", flush=True)
    moto_main(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    main()
