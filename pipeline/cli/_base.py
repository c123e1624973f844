"""The ``sts-pipeline`` click group. Command modules import ``main`` from here, never from the package that imports
them, so there is no cycle; each command imports what it needs inside its function, so loading the CLI stays cheap.
"""

from __future__ import annotations

from typing import Any

import click

from pipeline import __version__
from pipeline.errors import PipelineError


class PipelineFailure(click.ClickException):
    """Our own error, shown as one clear line; exit 2 (exit 1 means "done, but not everything succeeded")."""

    exit_code = 2


class _Group(click.Group):
    """Shows our own errors as one clear line (exit 2) instead of a traceback: the CLI's one exit-2 path."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as error:
            raise PipelineFailure(error.message) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sts-pipeline")
def main() -> None:
    """Batch speech-to-speech: manifests in, converted audio and provenance out."""
