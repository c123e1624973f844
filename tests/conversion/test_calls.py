"""The attempt loop keeps what the service answered when Redis (limiter, budget) fails to record it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from pipeline.api.client import StsClient
from pipeline.config import Settings
from pipeline.conversion.calls import AttemptRecord, CallContext, convert_with_retries
from pipeline.errors import TransientError
from pipeline.local.samples import speech_like
from pipeline.manifest.job import Job
from pipeline.run.budget import Reservation

GONE = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


class RedisGoneLimiter:
    """A free slot, then Redis is gone when the response is to be recorded."""

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[None]:
        yield None

    def observe_response(self, *args: object, **kwargs: object) -> None:
        raise GONE


class RedisGoneBudget:
    def reserve(self, estimate: float) -> Reservation:
        return Reservation(token="t", estimate=estimate)

    def settle(self, reservation: Reservation, actual: float) -> None:
        raise GONE

    def release(self, reservation: Reservation) -> None:
        raise GONE


def _context(answer: httpx.Response) -> CallContext:
    client = StsClient("http://sts.test", "test-key-attempts", transport=httpx.MockTransport(lambda _: answer))
    limiter, budget = RedisGoneLimiter(), RedisGoneBudget()
    return CallContext(settings=Settings(max_attempts=1), client=client, limiter=limiter,  # type: ignore[arg-type]
                       budget=budget)  # type: ignore[arg-type]


def _job() -> Job:
    return Job(input="s3://in-bucket/a.wav", voice_id="voice1", output_format="pcm_16000")


def test_paid_audio_is_kept_when_redis_cannot_record_it(tmp_path: Path) -> None:
    pcm = (np.clip(speech_like(1.0, 16000, seed=3), -1, 1) * 32767).astype("<i2").tobytes()
    ctx = _context(httpx.Response(200, content=pcm, headers={"character-cost": "17", "request-id": "req-1"}))
    audio = tmp_path / "in.wav"
    audio.write_bytes(b"not read by the mock")
    attempts: list[AttemptRecord] = []
    convert_with_retries(ctx, _job(), audio, tmp_path / "out.pcm", input_s=1.0, audio_content_type="audio/wav",
                         attempts=attempts)
    assert [a.outcome for a in attempts] == ["ok"]
    assert attempts[0].credits == 17
    assert (tmp_path / "out.pcm").read_bytes() == pcm


def test_the_service_error_is_reported_not_the_redis_one(tmp_path: Path) -> None:
    ctx = _context(httpx.Response(503, json={"detail": {"status": "service_unavailable", "message": "busy"}}))
    audio = tmp_path / "in.wav"
    audio.write_bytes(b"not read by the mock")
    with pytest.raises(TransientError) as raised:
        convert_with_retries(ctx, _job(), audio, tmp_path / "out.pcm", input_s=1.0, audio_content_type="audio/wav")
    assert raised.value.status == 503
