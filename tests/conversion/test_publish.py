"""Audio already paid for is published patiently: S3 outages shorter than the patience do not lose it."""

from __future__ import annotations

import pytest

from pipeline.conversion import publish
from pipeline.errors import StorageUnavailableError


def test_publishing_retries_through_a_short_s3_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish.time, "sleep", lambda _s: None)
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise StorageUnavailableError("S3 did not answer")

    publish.patiently(attempt, 60.0)
    assert len(calls) == 3


def test_publishing_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(publish.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(publish.time, "sleep", lambda _s: None)

    def attempt() -> None:
        raise StorageUnavailableError("S3 did not answer")

    with pytest.raises(StorageUnavailableError):
        publish.patiently(attempt, 30.0)
