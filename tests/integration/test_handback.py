"""The hand-back (pipeline/run/handback.py) on a real Redis with kombu's own Redis transport: real priority lists and
unacked entries, and a real Celery worker that runs the high job first, then the handed-back copy once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
from celery import Celery, Task
from celery.contrib.testing.worker import start_worker
from kombu import Connection, Exchange, Message, Queue

from pipeline.local.services import LocalStack
from pipeline.run.handback import HAND_BACKS_HEADER, UNACKED_INDEX_KEY, UNACKED_KEY, HandBack, hand_back_if_outranked

QUEUE = "hb"
HIGH, NORMAL, LOW = 0, 3, 6


@pytest.fixture
def channel(stack: LocalStack, redis_client: redis.Redis) -> Iterator[object]:
    with Connection(stack.redis_url) as connection:
        yield connection.default_channel


def _queue(channel: object) -> Queue:
    return Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, max_priority=9)(channel)


def _send(channel: object, priority: int, *names: str) -> None:
    producer = _queue(channel).channel.connection.client.Producer()  # type: ignore[attr-defined]
    for name in names:
        producer.publish({"name": name}, exchange=QUEUE, routing_key=QUEUE, priority=priority,
                         declare=[_queue(channel)], serializer="json")


def _take(channel: object) -> Message:
    message = _queue(channel).get(no_ack=False)
    assert message is not None
    return message


def _drain(channel: object) -> list[str]:
    names = []
    while (message := _queue(channel).get(no_ack=False)) is not None:
        names.append(message.payload["name"])
        message.ack()
    return names


def _evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_an_outranked_low_delivery_goes_back_first_in_its_list_once(channel: object,
                                                                      redis_client: redis.Redis) -> None:
    _send(channel, LOW, "low0", "low1", "low2")
    low0 = _take(channel)
    _send(channel, HIGH, "high0", "high1")

    assert HandBack(redis_client, QUEUE)(low0.delivery_tag, LOW) is True
    assert redis_client.hlen(UNACKED_KEY) == 0 and redis_client.zcard(UNACKED_INDEX_KEY) == 0
    low0.ack()  # Celery's late ack of the original: nothing left to remove, the copy stays queued

    high0, high1, copy = _take(channel), _take(channel), _take(channel)
    assert [high0.payload["name"], high1.payload["name"], copy.payload["name"]] == ["high0", "high1", "low0"]
    assert copy.headers[HAND_BACKS_HEADER] == 1 and copy.delivery_tag != low0.delivery_tag
    assert copy.properties["priority"] == LOW and redis_client.hexists(UNACKED_KEY, copy.delivery_tag)
    _send(channel, HIGH, "high2")
    assert HandBack(redis_client, QUEUE)(copy.delivery_tag, LOW, copy.headers[HAND_BACKS_HEADER]) is False
    for message in (high0, high1, copy):
        message.ack()
    assert _drain(channel) == ["high2", "low1", "low2"]  # nothing lost, nothing twice, the low run's order kept
    assert redis_client.hlen(UNACKED_KEY) == 0


def test_only_higher_lists_count_and_the_usual_start_costs_one_script(channel: object,
                                                                       redis_client: redis.Redis) -> None:
    hand_back = HandBack(redis_client, QUEUE)
    _send(channel, NORMAL, "normal0")
    normal0 = _take(channel)
    _send(channel, LOW, "low0")
    hand_back(normal0.delivery_tag, NORMAL)  # the scripts are loaded now
    before = _evalsha_calls(redis_client)
    assert hand_back(normal0.delivery_tag, NORMAL) is False  # low work waits below it: no reason to step aside
    assert _evalsha_calls(redis_client) - before == 1
    assert redis_client.hexists(UNACKED_KEY, normal0.delivery_tag)

    _send(channel, HIGH, "high0")
    before = _evalsha_calls(redis_client)
    assert hand_back(normal0.delivery_tag, NORMAL) is True
    assert _evalsha_calls(redis_client) - before == 2
    normal0.ack()
    assert _drain(channel) == ["high0", "normal0", "low0"]


def test_top_priority_a_spent_hand_back_and_a_restored_delivery_stay_put(channel: object,
                                                                           redis_client: redis.Redis) -> None:
    hand_back = HandBack(redis_client, QUEUE)
    _send(channel, HIGH, "high0")
    high0 = _take(channel)
    _send(channel, LOW, "low0")
    low0 = _take(channel)
    _send(channel, HIGH, "high1")
    before = _evalsha_calls(redis_client)
    assert hand_back(high0.delivery_tag, HIGH) is False
    assert hand_back(low0.delivery_tag, LOW, hand_backs=1) is False
    assert _evalsha_calls(redis_client) == before  # decided without asking Redis
    redis_client.hdel(UNACKED_KEY, low0.delivery_tag)  # as if a visibility sweep had re-queued it meanwhile
    assert hand_back(low0.delivery_tag, LOW) is False
    assert _drain(channel) == ["high1"]  # no copy was added


def test_a_task_request_is_read_and_a_dead_broker_means_the_job_runs(channel: object,
                                                                     redis_client: redis.Redis,
                                                                     stack: LocalStack) -> None:
    _send(channel, LOW, "low0")
    low0 = _take(channel)
    _send(channel, HIGH, "high0")
    request = SimpleNamespace(properties=low0.properties, delivery_info={"priority": LOW})
    assert hand_back_if_outranked("redis://127.0.0.1:1/0", QUEUE, request) is False
    assert redis_client.hexists(UNACKED_KEY, low0.delivery_tag)
    assert hand_back_if_outranked(stack.redis_url, QUEUE, request) is True
    assert _drain(channel) == ["high0", "low0"]


def test_a_celery_worker_runs_the_high_job_first_then_the_copy_once(stack: LocalStack,
                                                                    redis_client: redis.Redis) -> None:
    app = Celery("handback-test", broker=stack.redis_url)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE)
    events: list[tuple[str, str, int]] = []

    @app.task(bind=True, name="handback.job")
    def job(self: Task, name: str) -> None:
        hand_backs = int(getattr(self.request, HAND_BACKS_HEADER, 0) or 0)
        if name == "low0" and not hand_backs:  # high work arrives between this message's pop and its task start
            app.send_task("handback.job", args=["high0"], priority=HIGH)
        handed = hand_back_if_outranked(stack.redis_url, QUEUE, self.request)
        events.append(("handed back" if handed else "ran", name, hand_backs))

    for name in ("low0", "low1"):
        app.send_task("handback.job", args=[name], priority=LOW)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10):
        deadline = time.monotonic() + 20
        while len(events) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert events == [("handed back", "low0", 0), ("ran", "high0", 0), ("ran", "low0", 1), ("ran", "low1", 0)]
    assert redis_client.hlen(UNACKED_KEY) == 0
