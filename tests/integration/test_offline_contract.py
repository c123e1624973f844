"""The offline server against the vendor's contract, over loopback HTTP: account bodies validated against the
vendor's response schemas, every error body in the current envelope, tiers, the quota crossed mid-sequence, the
three 429 kinds, the 400s, 5xx not charged, the request-id header left out, /v2/voices paging, and the account
flags (``--tier``, ``--credits-*``, ``--models``, ``--voices``, ``--generated-voices``) and their admin knobs.

One server for the module, started with account flags; each test starts from those values (``PUT /_admin/account``
and ``/_admin/faults``) with the counters zeroed.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from pipeline.local.samples import speech_like
from pipeline.local.services import LocalStack
from pipeline.offline.voices import DEFAULT_VOICE_ID, VOICES
from tests.offline.spec import ENVELOPE_VALIDATOR, VALIDATION, errors_of, response_validator

RATE = 16000
KEY = "offline-contract-test-key"
MODELS = [{"model_id": "eleven_flash_v2_5", "name": "Flash v2.5", "can_do_voice_conversion": False,
           "can_do_text_to_speech": True, "concurrency_group": "turbo"},
          {"model_id": "eleven_sts_double", "description": "an STS model billed twice", "character_cost_multiplier": 2}]
VOICE_FILE = {"voices": [{"voice_id": "CloneVoice0000000001", "name": "Clone", "f0_ratio": 1.3},
                         {"voice_id": "ProVoice000000000001", "name": "Pro", "category": "professional"}]}
GENERATED = 120
N_VOICES = len(VOICES) + 2 + GENERATED
ACCOUNT = {"tier": "starter", "credits_limit": 100_000, "credits_used": 250}
FAULTS = {"max_concurrent": None, "rate_limit_per_minute": None, "rate_429": 0.0, "rate_500": 0.0, "rate_503": 0.0,
          "rate_cut": 0.0, "latency_fixed_s": 0.0, "latency_per_audio_second_s": 0.0, "retry_after_s": 2,
          "omit_error_request_id": False, "fault_seed": 5}
#: a multipart body whose part has no Content-Disposition name: the framework cannot read it
NAMELESS_PART = b"--x\r\nContent-Type: a/b\r\n\r\nv\r\n--x--\r\n"
ACCOUNT_PATHS = ("/v1/models", "/v1/voices", "/v2/voices", f"/v1/voices/{DEFAULT_VOICE_ID}", "/v1/user",
                 "/v1/user/subscription")


def pcm_bytes(seconds: float) -> bytes:
    """Raw 16 kHz s16le speech of exactly ``seconds`` (billed ceil(seconds * 1000/60) credits)."""
    return (speech_like(seconds, RATE, seed=3) * 20000).astype("<i2").tobytes()


def wav_bytes(seconds: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, RATE, seed=4), RATE, format="WAV")
    return buffer.getvalue()


def post(url: str, audio: bytes, *, voice: str = DEFAULT_VOICE_ID, key: str | None = KEY, stream: bool = True,
         fmt: str = "pcm_16000", data: dict[str, str] | None = None, raw: bool = True) -> httpx.Response:
    form = {"file_format": "pcm_s16le_16"} if raw else {}
    path = f"/v1/speech-to-speech/{voice}" + ("/stream" if stream else "")
    return httpx.post(url + path, params={"output_format": fmt}, data={**form, **(data or {})},
                      headers={"xi-api-key": key} if key else {}, files={"audio": ("in.pcm", audio)}, timeout=60)


def get(url: str, path: str, key: str | None = KEY, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"xi-api-key": key} if key else {}, timeout=30)


def admin(url: str, what: str, **changes: Any) -> dict[str, Any]:
    response = httpx.put(f"{url}/_admin/{what}", json=changes)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_admin/stats").json()  # type: ignore[no-any-return]


def subscription(url: str) -> dict[str, Any]:
    return get(url, "/v1/user/subscription").json()  # type: ignore[no-any-return]


def assert_envelope(response: httpx.Response, status: int, code: str, *, header: bool = True) -> dict[str, Any]:
    """The response is the current envelope with this status and code; returns its detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert errors_of(ENVELOPE_VALIDATOR, body) == [], body
    detail = body["detail"]
    assert detail["code"] == code
    if header:
        assert response.headers["request-id"] == detail["request_id"]
    else:
        assert "request-id" not in response.headers
    return detail  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("contract")
    (tmp / "models.json").write_text(json.dumps(MODELS))
    (tmp / "voices.json").write_text(json.dumps(VOICE_FILE))
    with LocalStack(workdir=tmp, api_key=KEY) as local:
        local.start_sts("--api-key", KEY, "--tier", "starter", "--credits-limit", "100000", "--credits-used", "250",
                        "--models", str(tmp / "models.json"), "--voices", str(tmp / "voices.json"),
                        "--generated-voices", str(GENERATED), "--max-input-seconds", "4",
                        "--max-input-bytes", "400000", "--retry-after", "2", "--fault-seed", "5")
        yield local.sts_url


@pytest.fixture
def url(server: str) -> str:
    admin(server, "faults", **FAULTS)
    admin(server, "account", **ACCOUNT)
    httpx.post(f"{server}/_admin/reset").raise_for_status()
    return server


# --- the flags and the account knobs

def test_flags_set_the_account_and_bad_knobs_are_refused(server: str) -> None:
    account = httpx.get(f"{server}/_admin/account").json()
    assert (account["tier"], account["credits_limit"], account["generated_voices"]) == ("starter", 100_000, GENERATED)
    assert [m["model_id"] for m in account["models"]] == ["eleven_flash_v2_5", "eleven_sts_double"]
    assert [v["voice_id"] for v in account["voices"]] == ["CloneVoice0000000001", "ProVoice000000000001"]
    assert account["concurrency"] == 3
    for changes, loc in (({"tier": "gold"}, ["body", "tier"]), ({"credits_used": -1}, ["body", "credits_used"]),
                         ({"models": [{"name": "no id"}]}, ["body", "models", "0", "model_id"])):
        refused = httpx.put(f"{server}/_admin/account", json=changes)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == loc, refused.text
        assert errors_of(VALIDATION, refused.json()) == []
    assert httpx.get(f"{server}/_admin/account").json()["tier"] == "starter"


# --- account bodies

def test_every_account_body_validates_against_the_vendor_schemas(url: str) -> None:
    for path in ACCOUNT_PATHS:
        response = get(url, path)
        assert response.status_code == 200 and len(response.headers["request-id"]) == 32, path
        if path != "/v1/voices":  # not one of the spec's operations
            template = "/v1/voices/{voice_id}" if path.startswith("/v1/voices/") else path
            assert errors_of(response_validator(template), response.json()) == [], path
    one = response_validator("/v1/voices/{voice_id}")
    for voice in get(url, "/v1/voices").json()["voices"]:
        assert errors_of(one, get(url, f"/v1/voices/{voice['voice_id']}").json()) == []
    sub = subscription(url)
    assert (sub["tier"], sub["character_count"], sub["character_limit"]) == ("starter", 250, 100_000)
    assert get(url, "/v1/user").json()["subscription"]["character_count"] == 250
    assert stats(url)["account_requests"]["/v1/voices/{voice_id}"] == 1 + len(get(url, "/v1/voices").json()["voices"])
    assert stats(url)["requests_total"] == 0  # account calls are not speech-to-speech requests


def test_account_endpoints_refuse_a_missing_or_wrong_key(url: str) -> None:
    for path in ACCOUNT_PATHS:
        for key in (None, "wrong"):
            detail = assert_envelope(get(url, path, key=key), 401, "invalid_api_key")
            assert detail["type"] == "authentication_error" and detail["status"] == "invalid_api_key"
    detail = assert_envelope(get(url, "/v1/voices/NoSuchVoice000000000"), 404, "voice_not_found")
    assert detail["param"] == "voice_id"
    assert_envelope(get(url, "/v1/no-such-endpoint"), 404, "not_found")


def test_v2_voices_pages_and_filters(url: str) -> None:
    seen: list[str] = []
    token = None
    while True:
        page = get(url, "/v2/voices", page_size=100, **({"next_page_token": token} if token else {})).json()
        assert errors_of(response_validator("/v2/voices"), page) == []
        assert page["total_count"] == N_VOICES and len(page["voices"]) <= 100
        seen += [voice["voice_id"] for voice in page["voices"]]
        if not page["has_more"]:
            break
        token = page["next_page_token"]
    assert len(seen) == len(set(seen)) == N_VOICES and seen[:len(VOICES)] == list(VOICES)
    wanted = ["ProVoice000000000001", "Gen00000000000000120", "NoSuchVoice000000000", DEFAULT_VOICE_ID]
    picked = httpx.get(f"{url}/v2/voices", params=[("voice_ids", v) for v in wanted], headers={"xi-api-key": KEY})
    assert [v["voice_id"] for v in picked.json()["voices"]] == [DEFAULT_VOICE_ID, "ProVoice000000000001",
                                                                "Gen00000000000000120"]
    assert picked.json()["total_count"] == 3 and picked.json()["has_more"] is False
    too_big = get(url, "/v2/voices", page_size=101)
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["query", "page_size"]
    assert errors_of(VALIDATION, too_big.json()) == []


# --- the plan: formats, concurrency, models

def test_tier_gated_formats_answer_403_and_cost_nothing(url: str) -> None:
    clip = pcm_bytes(1.0)
    expect = {"starter": {"mp3_44100_192": 403, "pcm_44100": 403}, "creator": {"mp3_44100_192": 200, "pcm_44100": 403},
              "pro": {"mp3_44100_192": 200, "pcm_44100": 200}}
    caps = {"starter": "3", "creator": "5", "pro": "10"}
    for tier, answers in expect.items():
        admin(url, "account", tier=tier)
        for fmt, status in answers.items():
            response = post(url, clip, fmt=fmt)
            assert response.status_code == status, (tier, fmt, response.text)
            assert response.headers["maximum-concurrent-requests"] == caps[tier]
            if status == 403:
                detail = assert_envelope(response, 403, "output_format_not_allowed")
                assert detail["param"] == "output_format" and tier in detail["message"]
    counters = stats(url)
    assert counters["requests_by_code"] == {"output_format_not_allowed": 3}
    assert counters["billed_credits"] == 3 * 17 and subscription(url)["character_count"] == 250 + 3 * 17


def test_models_the_account_lists_decide_what_converts(url: str) -> None:
    listed = {m["model_id"]: m for m in get(url, "/v1/models").json()}
    assert listed["eleven_flash_v2_5"]["can_do_voice_conversion"] is False
    assert listed["eleven_sts_double"]["model_rates"]["character_cost_multiplier"] == 2
    clip = pcm_bytes(1.0)
    detail = assert_envelope(post(url, clip, data={"model_id": "eleven_flash_v2_5"}), 400, "invalid_parameters")
    assert (detail["type"], detail["param"]) == ("validation_error", "model_id")
    assert "can_do_voice_conversion" in detail["message"]
    assert_envelope(post(url, clip, data={"model_id": "eleven_v9"}), 404, "model_not_found")
    doubled = post(url, clip, data={"model_id": "eleven_sts_double"})
    assert doubled.status_code == 200 and doubled.headers["character-cost"] == "34"
    cloned = post(url, clip, voice="CloneVoice0000000001")
    assert cloned.status_code == 200 and len(cloned.content) == len(clip)
    assert subscription(url)["character_count"] == 250 + 34 + 17


# --- credits

def test_quota_is_crossed_mid_sequence_and_never_passed(url: str) -> None:
    admin(url, "account", credits_limit=100, credits_used=0)
    two_s, one_s, tiny = pcm_bytes(2.0), pcm_bytes(0.96), pcm_bytes(0.06)  # 34, 16 and 1 credits
    statuses = [post(url, two_s).status_code for _ in range(2)]
    refused = post(url, two_s)
    detail = assert_envelope(refused, 401, "quota_exceeded")
    assert detail["status"] == "quota_exceeded" and detail["type"] == "billing_error"
    assert "32 credits remaining, while 34 credits are required" in detail["message"]
    assert "character-cost" not in refused.headers
    statuses += [post(url, one_s).status_code for _ in range(2)]  # 68 + 32 = exactly the limit
    assert statuses == [200] * 4
    assert_envelope(post(url, tiny), 401, "quota_exceeded")
    sub = subscription(url)
    assert sub["character_count"] == sub["character_limit"] == 100
    counters = stats(url)
    assert counters["billed_credits"] == 100 and counters["successes"] == 4
    assert counters["requests_by_status"] == {"200": 4, "401": 2}
    admin(url, "account", credits_limit=200)
    assert post(url, tiny).status_code == 200 and subscription(url)["character_count"] == 101


def test_a_500_or_503_says_not_charged_and_costs_nothing(url: str) -> None:
    clip = pcm_bytes(1.0)
    for knob, status, code in (("rate_500", 500, "internal_server_error"), ("rate_503", 503, "maintenance")):
        admin(url, "faults", **{**FAULTS, knob: 1.0})
        for stream in (True, False):
            response = post(url, clip, stream=stream)
            detail = assert_envelope(response, status, code)
            assert "not charged" in detail["message"] and response.headers["character-cost"] == "0"
    assert subscription(url)["character_count"] == 250 and stats(url)["billed_credits"] == 0


# --- the three 429 kinds

def test_rate_limit_per_minute_answers_429_with_retry_after(url: str) -> None:
    admin(url, "faults", **{**FAULTS, "rate_limit_per_minute": 3})
    nowhere = [post(url, b"", voice="NoSuchVoice000000000") for _ in range(3)]  # they pass the gate: they count
    assert [r.status_code for r in nowhere] == [404] * 3
    started = time.monotonic()
    throttled = post(url, pcm_bytes(0.5))
    detail = assert_envelope(throttled, 429, "rate_limit_exceeded")
    assert (detail["type"], detail["status"]) == ("rate_limit_error", "rate_limit_exceeded")
    retry_after = int(throttled.headers["retry-after"])
    assert 55 <= retry_after + (time.monotonic() - started) <= 61
    assert throttled.headers["maximum-concurrent-requests"] == "3"
    assert get(url, "/v1/models").status_code == 200  # the window covers speech-to-speech requests only
    admin(url, "faults", **{**FAULTS, "rate_limit_per_minute": 10})  # a new limit starts a new window
    assert post(url, pcm_bytes(0.5)).status_code == 200


def test_concurrent_limit_and_system_busy_are_told_apart(url: str) -> None:
    admin(url, "faults", **{**FAULTS, "max_concurrent": 1, "latency_fixed_s": 1.5})
    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(lambda _: post(url, pcm_bytes(0.5)), range(3)))
    busy = [r for r in responses if r.status_code == 429]
    assert busy and any(r.status_code == 200 for r in responses)
    for response in busy:
        detail = assert_envelope(response, 429, "concurrent_limit_exceeded")
        assert detail["status"] == "too_many_concurrent_requests" and response.headers["retry-after"] == "2"
    admin(url, "faults", **{**FAULTS, "rate_429": 1.0})
    detail = assert_envelope(post(url, pcm_bytes(0.5)), 429, "system_busy")
    assert detail["status"] == "system_busy"


# --- the 400s and the rest of the error list

def test_bad_audio_is_400_naming_the_limit(url: str) -> None:
    too_long = assert_envelope(post(url, wav_bytes(5.0), raw=False), 400, "audio_too_long")
    assert (too_long["type"], too_long["param"]) == ("validation_error", "audio")
    assert "limit is 4 s" in too_long["message"]
    too_large = assert_envelope(post(url, b"\0" * 400_002), 400, "request_too_large")
    assert "400000 bytes" in too_large["message"]
    for garbage, raw in ((b"not audio at all" * 40, False), (b"\0" * 1001, True), (b"", False)):
        detail = assert_envelope(post(url, garbage, raw=raw), 400, "invalid_audio")
        assert detail["type"] == "invalid_request" and detail["param"] == "audio"
    assert stats(url)["requests_by_code"] == {"audio_too_long": 1, "request_too_large": 1, "invalid_audio": 3}
    assert subscription(url)["character_count"] == 250


def test_every_error_body_of_the_conversion_endpoint_is_the_envelope(url: str) -> None:
    clip = pcm_bytes(0.5)
    cases = [
        (post(url, clip, key=None), 401, "invalid_api_key"),
        (post(url, clip, voice="NoSuchVoice000000000"), 404, "voice_not_found"),
        (post(url, clip, data={"model_id": "nope"}), 404, "model_not_found"),
        (post(url, clip, fmt="pcm_44100"), 403, "output_format_not_allowed"),
        (httpx.post(f"{url}/v1/speech-to-speech/{DEFAULT_VOICE_ID}", content=NAMELESS_PART,
                    headers={"xi-api-key": KEY, "content-type": "multipart/form-data; boundary=x"}), 400,
         "invalid_request"),
    ]
    for response, status, code in cases:
        assert_envelope(response, status, code)
    invalid = post(url, clip, fmt="wav_44100", data={"seed": "-1"})
    assert invalid.status_code == 422 and errors_of(VALIDATION, invalid.json()) == []
    assert {tuple(item["loc"]) for item in invalid.json()["detail"]} == {("query", "output_format"), ("body", "seed")}
    assert invalid.headers["request-id"]


def test_the_request_id_header_can_be_left_out_of_errors(url: str) -> None:
    admin(url, "faults", **{**FAULTS, "omit_error_request_id": True})
    for response, status, code in ((post(url, pcm_bytes(0.5), voice="NoSuchVoice000000000"), 404, "voice_not_found"),
                                   (post(url, pcm_bytes(0.5), key="wrong"), 401, "invalid_api_key"),
                                   (get(url, "/v1/user", key=None), 401, "invalid_api_key")):
        detail = assert_envelope(response, status, code, header=False)
        assert len(detail["request_id"]) == 32
    ok = post(url, pcm_bytes(0.5))
    assert ok.status_code == 200 and len(ok.headers["request-id"]) == 32


def test_serve_local_refuses_a_bad_account_file(tmp_path: Path) -> None:
    bad = tmp_path / "models.json"
    bad.write_text(json.dumps([{"model_id": "a", "colour": "red"}]))
    with LocalStack(workdir=tmp_path) as local, pytest.raises(Exception, match="exited with code 2"):
        local.start_sts("--models", str(bad))
    assert "models.0.colour" in (tmp_path / "sts.log").read_text()


def test_fault_flags_for_the_new_knobs_and_an_explicit_plan_concurrency(tmp_path: Path) -> None:
    with LocalStack(workdir=tmp_path) as local:
        local.start_sts("--tier", "free", "--rate-limit-per-minute", "7", "--omit-error-request-id",
                        "--plan-concurrency", "4")
        knobs = httpx.get(f"{local.sts_url}/_admin/faults").json()
        assert knobs["rate_limit_per_minute"] == 7 and knobs["omit_error_request_id"] is True
        answer = post(local.sts_url, pcm_bytes(0.5), fmt="mp3_44100_192")
        assert_envelope(answer, 403, "output_format_not_allowed", header=False)
        assert answer.headers["maximum-concurrent-requests"] == "4"  # the flag, not the free plan's 2
        sub = subscription(local.sts_url)
        assert (sub["tier"], sub["character_limit"], sub["status"]) == ("free", 10_000, "free")
