"""What ``reconcile`` and ``retry`` learn from a stored run's control.json (``pipeline.run.control``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.cli._source import Source


def run_cancelled(source: Source) -> bool:
    """Whether the run behind ``--run`` was cancelled (False for manifest files: they name no run)."""
    from pipeline.run.control import load_control
    from pipeline.run.stored import runs_root

    if not source.run_id:
        return False
    return load_control(source.storage, runs_root(source.settings), source.run_id).cancelled
