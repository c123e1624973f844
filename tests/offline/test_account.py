"""The offline server's account and error pieces, without a server: every account body against the vendor's response
schemas, every error code in the envelope, the quota, the request-rate window, /v2/voices paging and filters, and the
plan's format gates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from pipeline.formats import FORMAT_MIN_TIER, OUTPUT_FORMATS, TIERS, format_allowed, tier_named
from pipeline.offline import problems, voice_search
from pipeline.offline.account import DEFAULT_TIER, Account, AccountSettings
from pipeline.offline.models import BUILTIN_MODELS, ModelSpec
from pipeline.offline.problems import KINDS, Invalid, Problem
from pipeline.offline.ratelimit import RateWindow
from pipeline.offline.voices import BUILTIN_VOICES, VOICES
from tests.offline.spec import ENVELOPE_VALIDATOR, VALIDATION, errors_of, response_validator

EXTRA_MODELS = [{"model_id": "eleven_flash_tts_v2", "can_do_voice_conversion": False, "can_do_text_to_speech": True,
                 "concurrency_group": "turbo"},
                {"model_id": "eleven_sts_v3_alpha", "name": "STS v3", "languages": ["en", "hi", "zh"],
                 "character_cost_multiplier": 2.0}]
EXTRA_VOICES = [{"voice_id": "MyClone0000000000001", "name": "Clone", "f0_ratio": 1.2, "labels": {"accent": "x"}},
                {"voice_id": "pro-voice", "name": "Pro", "category": "professional", "whisper": True}]


def accounts() -> list[Account]:
    rich = {"models": EXTRA_MODELS, "voices": EXTRA_VOICES, "generated_voices": 3}
    return [Account(AccountSettings(tier=tier, **(rich if n % 2 else {}))) for n, tier in enumerate(TIERS)]


def search(account: Account, query: str) -> dict[str, Any]:
    return voice_search.search(list(account.voices.values()), voice_search.parse_query(QueryParams(query)))


# --- bodies against the vendor's schemas

@pytest.mark.parametrize("account", accounts(), ids=list(TIERS))
def test_every_account_body_validates_against_the_response_schemas(account: Account) -> None:
    bodies = {
        "/v1/user/subscription": account.subscription(),
        "/v1/user": account.user(),
        "/v1/models": [model.to_api() for model in account.models.values()],
        "/v2/voices": search(account, "page_size=100"),
    }
    for path, body in bodies.items():
        assert errors_of(response_validator(path), body) == [], path
    one = response_validator("/v1/voices/{voice_id}")
    for voice in account.voices.values():
        assert errors_of(one, voice.to_api()) == [], voice.voice_id
    assert errors_of(response_validator("/v2/voices"), search(account, "voice_ids=nobody")) == []


def test_the_validators_catch_a_wrong_body() -> None:
    """The schema checks can fail: a missing required field, a wrong type and an enum outside the spec's."""
    account = Account(AccountSettings())
    broken = {k: v for k, v in account.subscription().items() if k != "character_limit"}
    assert any("character_limit" in e for e in errors_of(response_validator("/v1/user/subscription"), broken))
    model = {**BUILTIN_MODELS[0].to_api(), "concurrency_group": "fast"}
    assert errors_of(response_validator("/v1/models"), [model])
    voice = {**BUILTIN_VOICES[0].to_api(), "category": "robot"}
    assert errors_of(response_validator("/v1/voices/{voice_id}"), voice)
    assert errors_of(response_validator("/v2/voices"), {"voices": [], "has_more": "no", "total_count": 0})


def test_subscription_says_tier_credits_and_reset() -> None:
    account = Account(AccountSettings(tier="starter", credits_used=120, next_reset_unix=1_800_000_000))
    body = account.subscription()
    assert (body["tier"], body["character_count"], body["character_limit"]) == ("starter", 120, 30_000)
    assert body["next_character_count_reset_unix"] == 1_800_000_000 and body["status"] == "active"
    assert Account(AccountSettings(tier="free")).subscription()["status"] == "free"
    assert Account(AccountSettings(tier="scale")).subscription()["tier"] == "scale_2024_08_10"
    user = account.user()
    assert user["subscription"]["character_count"] == 120 and user["subscription_extras"]["concurrency"] == 3
    assert user["xi_api_key"] is None
    assert DEFAULT_TIER == "pro" and Account(AccountSettings()).credits_limit == 500_000


def test_models_list_says_which_can_convert_and_their_rates() -> None:
    account = Account(AccountSettings(models=EXTRA_MODELS))
    listed = {m["model_id"]: m for m in (model.to_api() for model in account.models.values())}
    assert [m for m in listed if listed[m]["can_do_voice_conversion"]] == [
        "eleven_english_sts_v2", "eleven_multilingual_sts_v2", "eleven_sts_v3_alpha"]
    assert listed["eleven_flash_tts_v2"]["concurrency_group"] == "turbo"
    assert listed["eleven_sts_v3_alpha"]["model_rates"] == {"character_cost_multiplier": 2.0}
    assert [lang["name"] for lang in listed["eleven_sts_v3_alpha"]["languages"]] == ["English", "Hindi", "Chinese"]
    with pytest.raises(ValueError):
        AccountSettings(models=[{"model_id": "a"}, {"model_id": "a"}])
    with pytest.raises(ValueError):
        ModelSpec(model_id="bad id")


# --- errors

@pytest.mark.parametrize("code", list(KINDS))
def test_every_code_renders_the_current_envelope(code: str) -> None:
    request_id = problems.new_request_id()
    response = Problem(code, f"what went wrong ({code})", param="audio").response(request_id, {"x-extra": "1"})
    body = json.loads(response.body)
    assert errors_of(ENVELOPE_VALIDATOR, body) == []
    kind = KINDS[code]
    detail = body["detail"]
    assert response.status_code == kind.status and detail["code"] == code
    assert (detail["type"], detail["status"], detail["request_id"]) == (kind.type, kind.legacy, request_id)
    assert response.headers["request-id"] == request_id and response.headers["x-extra"] == "1"
    assert ("character-cost" in response.headers) == (kind.status >= 500)
    if kind.status >= 500:
        assert response.headers["character-cost"] == "0"


def test_envelope_details_legacy_mirror_retry_after_and_a_missing_header() -> None:
    assert KINDS["concurrent_limit_exceeded"].legacy == "too_many_concurrent_requests"
    assert {code for code, kind in KINDS.items() if kind.status == 429} == {
        "concurrent_limit_exceeded", "rate_limit_exceeded", "system_busy"}
    assert {code for code, kind in KINDS.items() if kind.status == 400} >= {
        "audio_too_long", "invalid_audio", "request_too_large"}
    throttled = Problem("rate_limit_exceeded", "slow down", retry_after_s=7).response("0" * 32)
    assert throttled.headers["retry-after"] == "7"
    hidden = Problem("invalid_api_key", "no").response("a" * 32, omit_request_id_header=True)
    assert "request-id" not in hidden.headers and json.loads(hidden.body)["detail"]["request_id"] == "a" * 32
    assert "not charged" in problems.not_charged("internal_server_error", "Boom.").message
    assert errors_of(ENVELOPE_VALIDATOR, {"detail": {"status": "invalid_api_key", "message": "old shape"}})
    invalid = Invalid([problems.problem_item(("query", "page_size"), "too big")]).response("b" * 32)
    assert invalid.status_code == 422 and errors_of(VALIDATION, json.loads(invalid.body)) == []


# --- quota

def test_quota_admits_until_the_next_request_would_cross_the_limit() -> None:
    account = Account(AccountSettings(tier="starter", credits_limit=100, credits_used=10))
    admitted = 0
    with pytest.raises(Problem) as refused:
        for _ in range(10):
            account.check_quota(34)
            account.charge(34)
            admitted += 1
    assert admitted == 2 and account.credits_used == 78 and account.credits_used <= account.credits_limit
    assert refused.value.code == "quota_exceeded" and refused.value.status == 401
    assert "22 credits remaining, while 34 credits are required" in refused.value.message
    account.check_quota(22)  # exactly what is left still fits
    with pytest.raises(Problem):
        account.check_quota(23)
    account.update({"credits_limit": 1000})
    account.check_quota(34)
    assert account.credits_used == 78
    account.update({"tier": "business", "credits_limit": None})
    assert account.credits_limit == 11_000_000 and account.tier.concurrency == 15


# --- the request-rate window

def test_rate_window_refuses_past_the_limit_and_frees_as_requests_age() -> None:
    now = [1000.0]
    window = RateWindow(clock=lambda: now[0])
    assert [window.admit(3) for _ in range(2)] == [None, None]
    now[0] += 10.0
    assert window.admit(3) is None  # three at 1000, 1000, 1010
    now[0] += 10.2
    assert window.admit(3) == 40  # refused, not logged: the oldest leaves the window at 1060
    now[0] += 39.9
    assert window.admit(3) is None  # 1060.1: the two of 1000 are gone; 1010 and this one remain
    assert window.admit(3) is None
    assert window.admit(3) == 10  # full again until 1010's leaves at 1070
    assert window.admit(None) is None
    window.reset()
    assert window.admit(1) is None and window.admit(1) == 60


# --- /v2/voices

def test_v2_voices_pages_by_token_until_has_more_is_false() -> None:
    account = Account(AccountSettings(generated_voices=233))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = search(account, f"page_size=100&next_page_token={token}")
        pages += 1
        assert page["total_count"] == 238 and len(page["voices"]) <= 100
        seen += [voice["voice_id"] for voice in page["voices"]]
        if not page["has_more"]:
            assert page["next_page_token"] is None
            break
        token = page["next_page_token"]
    assert pages == 3 and seen == list(account.voices) and len(set(seen)) == 238
    first = search(account, "")
    assert len(first["voices"]) == 10 and first["has_more"] and first["next_page_token"] == "10"


def test_v2_voices_filters() -> None:
    account = Account(AccountSettings(voices=EXTRA_VOICES, generated_voices=5))
    ids = ["vK7n2rg6OeynABb4ilbv", "nobody", "MyClone0000000000001"]
    found = search(account, "&".join(f"voice_ids={i}" for i in ids))
    assert [v["voice_id"] for v in found["voices"]] == ["vK7n2rg6OeynABb4ilbv", "MyClone0000000000001"]
    assert found["total_count"] == 2 and found["has_more"] is False
    assert [v["name"] for v in search(account, "search=WHISPER")["voices"]] == ["Hush"]
    assert {v["voice_id"] for v in search(account, "voice_type=default&page_size=100")["voices"]} == set(VOICES)
    assert search(account, "category=professional")["total_count"] == 1
    assert search(account, "voice_type=non-default&page_size=100")["total_count"] == 2 + 5
    names = [v["name"] for v in search(account, "sort=name&page_size=5")["voices"]]
    assert names == sorted(names, key=str.lower)
    newest = search(account, "sort=created_at_unix&page_size=1")["voices"][0]
    assert newest["voice_id"] == "Gen00000000000000005"


@pytest.mark.parametrize("query, loc", [("page_size=101", "page_size"), ("page_size=0", "page_size"),
                                        ("next_page_token=abc", "next_page_token"), ("sort=age", "sort"),
                                        ("&".join(f"voice_ids=v{n}" for n in range(101)), "voice_ids")])
def test_v2_voices_refuses_bad_queries_with_422(query: str, loc: str) -> None:
    with pytest.raises(Invalid) as caught:
        voice_search.parse_query(QueryParams(query))
    assert [item["loc"] for item in caught.value.problems] == [["query", loc]]


# --- the plans

def test_tiers_gate_formats_and_set_the_cap() -> None:
    assert FORMAT_MIN_TIER == {"mp3_44100_192": "creator", "pcm_44100": "pro"}
    allowed = {tier: [fmt for fmt in FORMAT_MIN_TIER if format_allowed(fmt, tier)] for tier in TIERS}
    assert allowed == {"free": [], "starter": [], "creator": ["mp3_44100_192"],
                       "pro": ["mp3_44100_192", "pcm_44100"], "scale": ["mp3_44100_192", "pcm_44100"],
                       "business": ["mp3_44100_192", "pcm_44100"]}
    assert all(format_allowed(fmt, "free") for fmt in OUTPUT_FORMATS if fmt not in FORMAT_MIN_TIER)
    assert {tier.name: tier.concurrency for tier in TIERS.values()} == {
        "free": 2, "starter": 3, "creator": 5, "pro": 10, "scale": 15, "business": 15}
    assert tier_named("growing_business") is TIERS["business"] and tier_named("nope") is None
