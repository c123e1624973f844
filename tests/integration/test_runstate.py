"""Live run state in a real Redis: the redelivery guard survives a wipe without going negative."""

from __future__ import annotations

import redis

from pipeline.conversion.guard import DeliveryGuard
from pipeline.run.state import RunState
from pipeline.states import JobState


def test_the_guard_counts_unclean_deliveries_only(redis_client: redis.Redis) -> None:
    guard = DeliveryGuard(redis_client, "job-1")
    assert guard.begin() == 1
    guard.end()
    assert guard.begin() == 1  # a clean end does not count
    assert guard.begin() == 2  # the first of these never ended: its worker died


def test_a_wipe_during_a_job_leaves_no_negative_counter(redis_client: redis.Redis) -> None:
    guard = DeliveryGuard(redis_client, "job-2")
    guard.begin()
    redis_client.flushdb()
    guard.end()
    assert redis_client.get("sts:unclean:job-2") is None
    assert guard.begin() == 1


def test_run_state_counts_by_state(redis_client: redis.Redis) -> None:
    state = RunState(redis_client, "run-x")
    state.init({"jobs": "3"})
    state.mark_many(["a", "b", "c"], JobState.QUEUED)
    state.mark("a", JobState.SUCCEEDED)
    state.halt("the service refused the API key (401)")
    state.halt("a second reason does not replace the first")
    assert state.counts() == {"queued": 2, "succeeded": 1}
    assert state.halted() == "the service refused the API key (401)"
    assert state.meta()["jobs"] == "3"
