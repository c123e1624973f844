"""Settings from the environment: a value that does not parse is one clear error naming the variable, not a
traceback, and never shows the value (it may be a secret)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import get_settings
from pipeline.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_segment_too_short_to_plan_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_MAX_SEGMENT_SECONDS", "3")
    monkeypatch.setenv("STS_VISIBILITY_TIMEOUT_S", "s3cr3t-looking-value")
    with pytest.raises(ConfigError) as refused:
        get_settings()
    message = refused.value.message
    assert "STS_MAX_SEGMENT_SECONDS: Input should be greater than or equal to 4" in message
    assert "STS_VISIBILITY_TIMEOUT_S: Input should be a valid number" in message
    assert "s3cr3t-looking-value" not in message


def test_the_cli_shows_it_as_one_line_with_exit_2() -> None:
    env = {"PATH": "/usr/bin:/bin", "STS_MAX_SEGMENT_SECONDS": "2.5"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "plan", "manifests/examples/podcast.jsonl"],
                          env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: settings from the environment do not parse: STS_MAX_SEGMENT_SECONDS: Input should be greater than "
        "or equal to 4"]
