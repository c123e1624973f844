"""The ``sts-pipeline`` command. Each subcommand lives in its own module and registers itself on ``main``."""

from __future__ import annotations

import click

from pipeline import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sts-pipeline")
def main() -> None:
    """Batch speech-to-speech: manifests in, converted audio and provenance out."""


def _register() -> None:
    from pipeline.cli import worker  # noqa: F401  (each module adds its command to ``main``)
    from pipeline.cli import validate  # noqa: F401


_register()
