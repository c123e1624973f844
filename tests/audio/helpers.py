"""Small helpers the audio tests share: make files with the ffmpeg CLI, and decode a short clip whole."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.audio.decode import pcm_stream

#: the generated inputs of ``conftest.files``
RATE = 44100
SECONDS = 3.0


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg CLI to make a test file (the library's own runs go through ``pipeline.audio.ffmpeg``)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def decoded(path: Path, *, sample_rate: int, input_args: Sequence[str] = ()) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``: the stream's blocks joined, for short test clips only."""
    blocks = list(pcm_stream(path, sample_rate=sample_rate, input_args=input_args))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
