"""The pipeline's client against the offline server, over loopback HTTP: every answer the server can give for the
speech-to-speech endpoint (docs/offline-server.md, *Checks* and *Errors*) is mapped as the reference says, and every
one of the 21 formats it sends passes the client's checks of a 200.

One server for the module (it accepts only KEY, limits inputs to 4 s and 400,000 bytes); each test starts from the
default knobs and account with the counters zeroed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.api.client import StsClient
from pipeline.api.limiter import Limiter, LimiterConfig
from pipeline.api.problems import limit_kind
from pipeline.conversion.calls import billed_credits
from pipeline.errors import (
    ApiError,
    AuthError,
    PipelineError,
    QuotaExceededError,
    RateLimitedError,
    RefusedByPlanError,
    RejectedError,
    TransientError,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.local.services import LocalStack
from pipeline.manifest.job import Job
from pipeline.offline.voices import DEFAULT_VOICE_ID
from tests.support import decoded_seconds, write_input

KEY = "client-contract-test-key"
FAULTS = {"max_concurrent": None, "rate_limit_per_minute": None, "rate_429": 0.0, "rate_500": 0.0, "rate_503": 0.0,
          "rate_cut": 0.0, "latency_fixed_s": 0.0, "latency_per_audio_second_s": 0.0, "retry_after_s": 2,
          "omit_error_request_id": False, "fault_seed": 5}
ACCOUNT = {"tier": "pro", "credits_limit": None, "credits_used": 0}
NAMELESS_PART = b"--x\r\nContent-Type: a/b\r\n\r\nv\r\n--x--\r\n"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalStack(workdir=tmp_path_factory.mktemp("client-contract")) as own:
        own.start_sts("--api-key", KEY, "--max-input-seconds", "4", "--max-input-bytes", "400000",
                      "--fault-seed", "5")
        yield own.sts_url


@pytest.fixture(autouse=True)
def _defaults(url: str) -> Iterator[None]:
    admin(url, "faults", **FAULTS)
    admin(url, "account", **ACCOUNT)
    httpx.post(f"{url}/_admin/reset", timeout=5)
    yield
    admin(url, "faults", **FAULTS)
    admin(url, "account", **ACCOUNT)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("clips")
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"this is not audio at all " * 40)
    big = tmp / "big.pcm"
    big.write_bytes(b"\0" * 400_002)
    return {"clip": write_input(tmp / "clip.wav", 1.0), "long": write_input(tmp / "long.wav", 5.0),
            "garbage": garbage, "big": big}


def admin(url: str, what: str, **changes: Any) -> dict[str, Any]:
    response = httpx.put(f"{url}/_admin/{what}", json=changes, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def job(**fields: Any) -> Job:
    return Job(input="s3://in-bucket/clip.wav", voice_id=fields.pop("voice_id", DEFAULT_VOICE_ID),
               output_format=fields.pop("output_format", "pcm_16000"), **fields)


def request(url: str, tmp: Path, audio: Path, the_job: Job | None = None, *, key: str = KEY) -> PipelineError:
    with StsClient(url, key, connect_timeout_s=5, read_timeout_s=30) as client:
        with pytest.raises(PipelineError) as caught:
            client.stream(the_job or job(), audio, tmp / "out.bin", input_s=1.0, expected_output_s=1.0)
    return caught.value


def raw_error(url: str, method: str, path: str, **kwargs: Any) -> PipelineError:
    """An answer our client cannot provoke (it always sends a well-formed POST), mapped by the client's own code."""
    with httpx.Client(base_url=url, headers={"xi-api-key": KEY}, timeout=30) as http:
        with http.stream(method, path, **kwargs) as response:
            assert response.status_code != 200
            return StsClient._error_from(response, {"voice_id": DEFAULT_VOICE_ID}, time.monotonic() + 30)


# --- 400

def test_400_audio_too_long_is_rejected_naming_the_limit(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    error = request(url, tmp_path, clips["long"])
    assert isinstance(error, RejectedError) and error.reason == "audio_too_long" and error.status == 400
    assert error.final_state.value == "rejected"
    assert "5 minutes" in error.message and "STS_MAX_SEGMENT_SECONDS" in error.message
    assert "the limit is 4 s" in error.message  # the service's own words follow ours
    assert error.request_id and error.response is not None and error.response.api_code == "audio_too_long"


def test_400_request_too_large(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    error = request(url, tmp_path, clips["big"], job(file_format="pcm_s16le_16"))
    assert isinstance(error, RejectedError) and error.reason == "request_too_large"
    assert "50 MB" in error.message


def test_400_invalid_audio(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    error = request(url, tmp_path, clips["garbage"])
    assert isinstance(error, RejectedError) and error.reason == "invalid_audio"
    assert "could not read the input audio" in error.message


def test_400_invalid_parameters_for_a_text_only_model(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    error = request(url, tmp_path, clips["clip"], job(model_id="eleven_multilingual_v2"))
    assert isinstance(error, RejectedError) and error.reason == "rejected" and error.status == 400
    assert "400 invalid_parameters" in error.message and "model_id" in error.message


def test_400_invalid_request_for_a_malformed_body(url: str) -> None:
    error = raw_error(url, "POST", f"/v1/speech-to-speech/{DEFAULT_VOICE_ID}/stream", content=NAMELESS_PART,
                      headers={"content-type": "multipart/form-data; boundary=x"})
    assert isinstance(error, RejectedError) and error.reason == "rejected" and error.status == 400
    assert "400 invalid_request" in error.message


# --- 401, 403, 404, 405, 422

def test_401_invalid_api_key_halts(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    error = request(url, tmp_path, clips["clip"], key="not-the-key")
    assert isinstance(error, AuthError) and error.reason == "http_401"
    assert error.message.startswith("the service refused the API key (401)")


def test_401_quota_exceeded_is_a_deferral_not_a_bad_key(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    admin(url, "account", credits_limit=1000, credits_used=990)
    error = request(url, tmp_path, clips["clip"])
    assert isinstance(error, QuotaExceededError) and not isinstance(error, AuthError)
    assert error.reason == "quota_exceeded" and error.final_state.value == "deferred" and error.status == 401
    assert "not a bad key" in error.message and "retry" in error.message
    assert billed_credits(error) == 0.0


@pytest.mark.parametrize(("fmt", "tier", "needs"), [("pcm_44100", "starter", "pro"),
                                                    ("mp3_44100_192", "starter", "creator")])
def test_403_a_tier_gated_format_names_it(url: str, clips: dict[str, Path], tmp_path: Path, fmt: str, tier: str,
                                          needs: str) -> None:
    admin(url, "account", tier=tier)
    error = request(url, tmp_path, clips["clip"], job(output_format=fmt))
    assert isinstance(error, RefusedByPlanError) and error.reason == "output_format_not_allowed"
    assert f"output_format {fmt}" in error.message and f"the {needs} plan or above" in error.message
    assert error.final_state.value == "rejected"


def test_404_voice_and_model_not_found_name_the_id(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    voice = request(url, tmp_path, clips["clip"], job(voice_id="NoSuchVoice000000001"))
    assert isinstance(voice, ApiError) and voice.reason == "http_404" and voice.api_status == "voice_not_found"
    assert "the voice_id NoSuchVoice000000001 was not found" in voice.message
    model = request(url, tmp_path, clips["clip"], job(model_id="eleven_nonexistent_v9"))
    assert isinstance(model, ApiError) and model.reason == "http_404" and model.api_status == "model_not_found"
    assert "the model_id eleven_nonexistent_v9 was not found" in model.message


def test_404_and_405_of_the_framework(url: str) -> None:
    unknown = raw_error(url, "POST", "/v1/speech-to-speech-nowhere")
    assert isinstance(unknown, ApiError) and unknown.reason == "http_404"
    wrong_method = raw_error(url, "GET", f"/v1/speech-to-speech/{DEFAULT_VOICE_ID}/stream")
    assert isinstance(wrong_method, ApiError) and wrong_method.reason == "http_405"
    assert wrong_method.api_status == "method_not_allowed"


def test_422_keeps_its_message(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    bad = job().model_copy(update={"optimize_streaming_latency": 9})  # past our validator, as if from elsewhere
    error = request(url, tmp_path, clips["clip"], bad)
    assert isinstance(error, RejectedError) and error.reason == "rejected" and error.status == 422
    assert error.message.startswith("the service rejected the request (422): query.optimize_streaming_latency")


# --- 429: the three kinds, and what the limiter makes of each

def _slots_held(client: redis.Redis, cap: int) -> tuple[Limiter, list[Any]]:
    limiter = Limiter(client, f"contract{cap}", LimiterConfig(configured_cap=cap, requests_per_minute=None,
                                                              lease_s=30.0))
    return limiter, [limiter.slot(wait_s=1) for _ in range(cap)]


def test_429_concurrent_limit_exceeded_lowers_the_cap(url: str, clips: dict[str, Path], tmp_path: Path,
                                                      redis_client: redis.Redis) -> None:
    admin(url, "faults", max_concurrent=1, latency_fixed_s=2.0)
    outcome: list[Any] = []

    def slow() -> None:
        with StsClient(url, KEY, read_timeout_s=30) as client:
            outcome.append(client.stream(job(), clips["clip"], tmp_path / "slow.bin", input_s=1.0,
                                         expected_output_s=1.0))

    first = threading.Thread(target=slow)
    first.start()
    try:
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/_admin/stats", timeout=5).json()["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        error = request(url, tmp_path, clips["clip"])
    finally:
        first.join(timeout=30)
    assert outcome and outcome[0].status == 200
    assert isinstance(error, RateLimitedError) and error.kind == "concurrent_limit_exceeded"
    assert error.retry_after_s == 2.0 and error.response is not None
    assert limit_kind(error.response.api_code) == "concurrent_limit_exceeded"
    limiter, slots = _slots_held(redis_client, 2)
    with slots[0], slots[1]:
        limiter.observe_response(429, dict(error.response.headers), error.response.api_code)
    assert limiter.effective_cap() == 1
    assert limiter.snapshot()["cooldown_remaining_s"] > 1.0  # Retry-After: 2, shared


def test_429_rate_limit_exceeded_pauses_for_retry_after(url: str, clips: dict[str, Path], tmp_path: Path,
                                                        redis_client: redis.Redis) -> None:
    admin(url, "faults", rate_limit_per_minute=1)
    with StsClient(url, KEY) as client:
        client.stream(job(), clips["clip"], tmp_path / "first.bin", input_s=1.0, expected_output_s=1.0)
    error = request(url, tmp_path, clips["clip"])
    assert isinstance(error, RateLimitedError) and error.kind == "rate_limit_exceeded"
    assert error.retry_after_s is not None and 30 <= error.retry_after_s <= 60
    assert error.response is not None
    limiter, slots = _slots_held(redis_client, 2)
    with slots[0], slots[1]:
        limiter.observe_response(429, dict(error.response.headers), error.response.api_code)
    assert limiter.effective_cap() == 2  # the cap stays
    assert limiter.snapshot()["cooldown_remaining_s"] > 25


def test_429_system_busy_backs_off(url: str, clips: dict[str, Path], tmp_path: Path,
                                   redis_client: redis.Redis) -> None:
    admin(url, "faults", rate_429=1.0)
    error = request(url, tmp_path, clips["clip"])
    assert isinstance(error, RateLimitedError) and error.kind == "system_busy" and error.retry_after_s == 2.0
    assert error.response is not None
    limiter, slots = _slots_held(redis_client, 2)
    with slots[0], slots[1]:
        limiter.observe_response(429, dict(error.response.headers), error.response.api_code)
    assert limiter.effective_cap() == 2 and limiter.snapshot()["cooldown_remaining_s"] > 1.0


# --- 5xx, request ids, cut streams

@pytest.mark.parametrize(("knob", "status", "code"), [("rate_500", 500, "internal_server_error"),
                                                      ("rate_503", 503, "maintenance")])
def test_5xx_are_transient_and_bill_nothing(url: str, clips: dict[str, Path], tmp_path: Path, knob: str,
                                            status: int, code: str) -> None:
    admin(url, "faults", **{knob: 1.0})
    error = request(url, tmp_path, clips["clip"])
    assert isinstance(error, TransientError) and error.reason == f"http_{status}" and error.status == status
    assert f"({code})" in error.message and "not charged" in error.message
    assert billed_credits(error) == 0.0
    assert error.response is not None and error.response.headers["character-cost"] == "0"


def test_the_request_id_comes_from_the_body_when_the_header_is_left_out(url: str, clips: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    admin(url, "faults", rate_503=1.0)
    with_header = request(url, tmp_path, clips["clip"])
    admin(url, "faults", omit_error_request_id=True)
    without = request(url, tmp_path, clips["clip"])
    for error in (with_header, without):
        assert error.request_id is not None and len(error.request_id) == 32
        assert error.response is not None and error.response.headers["request-id"] == error.request_id
    assert without.request_id != with_header.request_id
    voice = request(url, tmp_path, clips["clip"], job(voice_id="NoSuchVoice000000001"))
    assert voice.request_id is not None and len(voice.request_id) == 32


def test_a_cut_stream_is_transient_and_billed(url: str, clips: dict[str, Path], tmp_path: Path) -> None:
    admin(url, "faults", rate_cut=1.0)
    error = request(url, tmp_path, clips["clip"])
    assert isinstance(error, TransientError) and error.reason == "cut_stream" and error.status == 200
    assert billed_credits(error) == 17.0


# --- 200: every format passes the checks

@pytest.mark.parametrize("fmt", list(OUTPUT_FORMATS))
def test_every_format_the_server_sends_passes_the_checks(url: str, clips: dict[str, Path], tmp_path: Path,
                                                         fmt: str) -> None:
    out = tmp_path / f"out.{OUTPUT_FORMATS[fmt].extension}"
    with StsClient(url, KEY) as client:
        result = client.stream(job(output_format=fmt), clips["clip"], out, input_s=1.0, expected_output_s=1.0)
    assert result.status == 200 and result.character_cost == 17.0 and result.bytes_written == out.stat().st_size
    assert abs(decoded_seconds(out, fmt) - 1.0) < 0.05
