"""The drain flag: absent, nothing drains; raised, a job is handed back before its next request."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.conversion import drain
from pipeline.errors import SlotUnavailableError


def test_no_flag_file_named_means_no_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(drain.ENV, raising=False)
    drain.begin()  # nowhere to write: a no-op
    assert not drain.draining()
    drain.check()


def test_a_raised_flag_hands_the_job_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(drain.ENV, "")  # restored (to absent) after the test, whatever prepare() sets
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    path = drain.prepare()
    assert path.parent == tmp_path and not path.exists() and not drain.draining()
    drain.check()
    drain.begin()
    assert drain.draining()
    with pytest.raises(SlotUnavailableError, match="shutting down"):
        drain.check()
    assert drain.prepare() == path and not drain.draining()  # a restarted worker starts undrained
