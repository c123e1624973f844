"""A cancelled run starts no request: the attempt loop raises ``RunCancelled`` before the HTTP call."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipeline.api.client import StsClient
from pipeline.config import Settings
from pipeline.conversion.calls import AttemptRecord, CallContext, convert_with_retries
from pipeline.errors import RunCancelled
from pipeline.run.state import RunState
from pipeline.states import JobState
from tests.conversion.test_calls import RedisGoneBudget, RedisGoneLimiter, _job
from tests.run.test_control import FakeRedis


def test_no_request_after_the_cancel(tmp_path: Path) -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    live = FakeRedis()
    state = RunState(live, "run-1")  # type: ignore[arg-type]
    state.cancel('{"what": "cancel"}')
    ctx = CallContext(settings=Settings(max_attempts=3),
                      client=StsClient("http://sts.test", "test-key-cancel", transport=httpx.MockTransport(answer)),
                      limiter=RedisGoneLimiter(), budget=RedisGoneBudget(), run_state=state)  # type: ignore[arg-type]
    audio = tmp_path / "in.wav"
    audio.write_bytes(b"never sent")
    attempts: list[AttemptRecord] = []
    with pytest.raises(RunCancelled) as raised:
        convert_with_retries(ctx, _job(), audio, tmp_path / "out.pcm", input_s=1.0, audio_content_type="audio/wav",
                             attempts=attempts)
    assert requests == [] and attempts == []
    assert raised.value.final_state is JobState.CANCELLED and raised.value.reason == "cancelled"
