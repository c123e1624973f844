"""The ``sts-pipeline`` command. Each subcommand lives in its own module and registers itself on ``main``."""

from __future__ import annotations

from pipeline.cli import (  # noqa: F401,E501  (registers)
    cancel,
    export,
    feed,
    manifest,
    metrics,
    pause,
    plan,
    reconcile,
    retry,
    runs,
    serve,
    status,
    submit,
    validate,
    worker,
)
from pipeline.cli._base import main

__all__ = ["main"]
