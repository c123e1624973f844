"""The ``sts-pipeline`` command. Each subcommand lives in its own module and registers itself on ``main``."""

from __future__ import annotations

from typing import Any

import click

from pipeline import __version__
from pipeline.errors import PipelineError


class _PipelineFailure(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    """Shows our own errors as one clear line (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as error:
            raise _PipelineFailure(error.message) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sts-pipeline")
def main() -> None:
    """Batch speech-to-speech: manifests in, converted audio and provenance out."""


def _register() -> None:
    from pipeline.cli import plan, submit, worker  # noqa: F401  (each module adds its command to ``main``)
    from pipeline.cli import validate  # noqa: F401
    from pipeline.cli import serve  # noqa: F401
    from pipeline.cli import reconcile, retry, status  # noqa: F401


_register()
