"""Waiting for a run through a Redis that goes away: ride out a short outage, stop clearly when the state is gone."""

from __future__ import annotations

import io

import pytest
import redis
from rich.console import Console

from pipeline.errors import RunStateLost
from pipeline.run.progress import wait_for_run

RUN = "run-x"


class FlakyRedis:
    """Answers RunState's reads: each read of the jobs takes the next of ``jobs`` (the last repeats; an exception
    is raised), the meta is fixed."""

    def __init__(self, jobs: list[dict[bytes, bytes] | Exception], meta: dict[bytes, bytes]) -> None:
        self._jobs = jobs
        self._meta = meta

    def hvals(self, key: str) -> list[bytes]:
        item = self._jobs.pop(0) if len(self._jobs) > 1 else self._jobs[0]
        if isinstance(item, Exception):
            raise item
        return list(item.values())

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return self._meta


def _wait(client: FlakyRedis, **kwargs: float) -> object:
    return wait_for_run(client, RUN, 2, console=Console(file=io.StringIO()), poll_s=0.01,  # type: ignore[arg-type]
                        **kwargs)


def test_a_short_outage_is_ridden_out() -> None:
    down = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    client = FlakyRedis([{b"a": b"running"}, down, down, {b"a": b"succeeded", b"b": b"failed"}],
                        meta={b"jobs": b"2"})
    counts = _wait(client, outage_s=5)
    assert counts == {"succeeded": 1, "failed": 1}  # type: ignore[comparison-overlap]


def test_a_longer_outage_stops_the_wait_with_one_clear_error() -> None:
    client = FlakyRedis([redis.ConnectionError("Connection refused.")], meta={b"jobs": b"2"})
    with pytest.raises(RunStateLost, match="Redis has not answered for 0 s"):
        _wait(client, outage_s=0.05)


def test_redis_back_without_the_run_stops_the_wait() -> None:
    """Restarted empty: workers that outlived the wipe may re-create job states, but the run's meta is gone."""
    client = FlakyRedis([{b"a": b"succeeded"}], meta={})
    with pytest.raises(RunStateLost, match=f"run {RUN}'s live state is gone from Redis"):
        _wait(client, timeout_s=30)
