"""sts-pipeline: recorded speech converted into another voice through a speech-to-speech API, in batches.

The packages follow the data path, and dependencies point one way (``tests/test_layering.py`` enforces it):

    manifest/     the lines a user writes → validated jobs with stable ids          (FILE:LINE problems)
    run/          a run: task messages, live state and budget (Redis), stored copy (S3), plan, submit, retry
    conversion/   the worker's job: download → audio → api → publish, with its poison guard
    audio/        the one ffmpeg boundary: probe, prepare, segments, quality; tags and loudness mastering
    api/          the vendor's service: HTTP client, shared limiter, backoff
    storage/      S3, the ledger: objects, provenance and failure records, listing scans, an in-memory double
    report/       what S3 alone says about a run, and its renderings (never Redis)
    feed/         podcast feeds: a show's episodes into S3 and a manifest; a run's re-voiced episodes as a feed
    dataset/      nightly datasets: an S3 folder of clips into fan-out shards, a run into HF/WebDataset/NeMo exports
    cli/          one module per command;  local/  services for the demo and tests;  offline/  the stand-in server

Leaves that every stage may use: ``config``, ``errors`` (the exception tree), ``reasons`` (failure codes),
``states`` (``JobState``), ``formats`` (the vendor's published contract), ``s3uri`` and ``_redis``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sts-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
