"""The one table from (status, code) to our errors, case by case: one case per row of ``RULES``, and the envelope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.api.problems import (
    RULES,
    NonJson,
    limit_kind,
    problem_from,
    read_body,
    read_envelope,
    rule_for,
)
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
from pipeline.states import JobState

NOW = 1_750_000_000.0
REQUEST = {"voice_id": "VoiceAbc123", "model_id": "eleven_multilingual_sts_v2", "output_format": "pcm_44100",
           "remove_background_noise": "true", "enable_logging": "false"}


def envelope(code: str | None, *, type_: str | None = None, message: str = "it says so", legacy: str | None = None,
             request_id: str | None = "req-body-1", **extra: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"type": type_, "code": code, "message": message, "request_id": request_id,
                              "param": None, "status": legacy if legacy is not None else code, **extra}
    return {"detail": detail}


@dataclass
class Case:
    """One answer and what it must become."""

    status: int
    body: Any
    error: type[PipelineError]
    reason: str
    says: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    state: JobState | None = None


CASES: dict[str, Case] = {
    "400 audio_too_long": Case(400, envelope("audio_too_long", type_="validation_error"), RejectedError,
                               "audio_too_long", ("5 minutes", "300 s", "STS_MAX_SEGMENT_SECONDS", "segment"),
                               state=JobState.REJECTED),
    "400 request_too_large": Case(400, envelope("request_too_large", type_="validation_error"), RejectedError,
                                  "request_too_large", ("50 MB", "segments")),
    "400 invalid_audio": Case(400, envelope("invalid_audio", type_="invalid_request"), RejectedError, "invalid_audio",
                              ("could not read the input audio", "re-export")),
    "400 validation_error": Case(400, envelope("invalid_parameters", type_="validation_error",
                                               message="The model x cannot do voice conversion"), RejectedError,
                                 "rejected", ("rejected the request (400 invalid_parameters)", "cannot do voice")),
    "400 invalid_request": Case(400, envelope("invalid_request", type_="invalid_request"), RejectedError, "rejected",
                                ("rejected the request (400 invalid_request)",)),
    "400 other": Case(400, envelope("something_new"), ApiError, "http_400", ("the service answered 400",)),
    "401 invalid_api_key": Case(401, envelope("invalid_api_key", type_="authentication_error"), AuthError, "http_401",
                                ("the service refused the API key (401): set STS_API_KEY",), state=JobState.FAILED),
    "401 quota_exceeded": Case(401, envelope("quota_exceeded", type_="billing_error"), QuotaExceededError,
                               "quota_exceeded", ("credits for this period are spent", "not a bad key",
                                                  "sts-pipeline retry"), state=JobState.DEFERRED),
    "401 insufficient_credits": Case(401, envelope("insufficient_credits"), QuotaExceededError, "quota_exceeded",
                                     ("credits for this period are spent",), state=JobState.DEFERRED),
    "401 billing_error": Case(401, envelope("credits_gone", type_="billing_error"), QuotaExceededError,
                              "quota_exceeded", ("credits for this period are spent",)),
    "401 other": Case(401, {"detail": "Unauthorized"}, AuthError, "http_401", ("refused the API key (401)",)),
    "402 insufficient_credits": Case(402, envelope("insufficient_credits"), QuotaExceededError, "quota_exceeded",
                                     ("(402 insufficient_credits",)),
    "402 other": Case(402, None, QuotaExceededError, "quota_exceeded", ("(402)",)),
    "403 output_format_not_allowed": Case(403, envelope("output_format_not_allowed", type_="authorization_error"),
                                          RefusedByPlanError, "output_format_not_allowed",
                                          ("output_format pcm_44100", "pro plan or above", "choose another"),
                                          state=JobState.REJECTED),
    "403 feature_not_available": Case(403, envelope("feature_not_available", param="remove_background_noise"),
                                      RefusedByPlanError, "feature_not_available",
                                      ("remove_background_noise=true", "leave it out")),
    "403 voice_access_denied": Case(403, envelope("voice_access_denied"), RefusedByPlanError, "voice_access_denied",
                                    ("voice_id VoiceAbc123",)),
    "403 model_access_denied": Case(403, envelope("model_access_denied"), RefusedByPlanError, "model_access_denied",
                                    ("model_id eleven_multilingual_sts_v2",)),
    "403 other": Case(403, envelope("forbidden"), ApiError, "http_403", ("the service answered 403",)),
    "404 voice_not_found": Case(404, envelope("voice_not_found", type_="not_found"), ApiError, "http_404",
                                ("the voice_id VoiceAbc123 was not found", "GET /v2/voices")),
    "404 model_not_found": Case(404, envelope("model_not_found", type_="not_found"), ApiError, "http_404",
                                ("the model_id eleven_multilingual_sts_v2 was not found",)),
    "404 other": Case(404, envelope("not_found"), ApiError, "http_404", ("the service answered 404",)),
    "408": Case(408, None, TransientError, "http_408", ("the service answered 408",)),
    "409": Case(409, None, TransientError, "http_409", ("the service answered 409",)),
    "422": Case(422, {"detail": [{"loc": ["body", "audio"], "msg": "Field required", "type": "missing"}]},
                RejectedError, "rejected", ("the service rejected the request (422): body.audio: Field required",)),
    "429 concurrent_limit_exceeded": Case(429, envelope("concurrent_limit_exceeded", type_="rate_limit_error",
                                                        legacy="too_many_concurrent_requests"),
                                          RateLimitedError, "rate_limited", ("429 concurrent_limit_exceeded",),
                                          headers={"retry-after": "2"}),
    "429 too_many_concurrent_requests": Case(429, envelope(None, legacy="too_many_concurrent_requests"),
                                             RateLimitedError, "rate_limited", ("429 concurrent_limit_exceeded",)),
    "429 rate_limit_exceeded": Case(429, envelope("rate_limit_exceeded"), RateLimitedError, "rate_limited",
                                    ("429 rate_limit_exceeded",)),
    "429 system_busy": Case(429, envelope("system_busy"), RateLimitedError, "rate_limited", ("429 system_busy",)),
    "429 other": Case(429, "<html>slow down</html>", RateLimitedError, "rate_limited", ("429 rate_limited",)),
    "5xx": Case(500, envelope("internal_server_error", message="It broke. The request was not charged; retry it."),
                TransientError, "http_500", ("the service answered 500 (internal_server_error)",),
                headers={"character-cost": "34"}),
}


def test_every_row_has_a_case_and_every_key_is_unique() -> None:
    keys = [(rule.status, rule.code) for rule in RULES]
    assert len(keys) == len(set(keys))
    covered = {rule_for(case.status, read_envelope(case.body)) for case in CASES.values()}
    assert covered == set(RULES), [f"{r.status} {r.code}" for r in set(RULES) - covered]


@pytest.mark.parametrize("name", list(CASES))
def test_the_table_maps_each_answer(name: str) -> None:
    case = CASES[name]
    error = problem_from(case.status, case.body, case.headers, request=REQUEST, now=NOW)
    rule = rule_for(case.status, read_envelope(case.body))
    assert type(error) is case.error is rule.error, (name, type(error), rule)
    assert error.reason == case.reason
    assert rule.reason == case.reason or rule.reason == "http_<status>"
    assert error.status == case.status
    for text in case.says:
        assert text in error.message, (name, error.message)
    if case.state is not None:
        assert error.final_state is case.state
    assert error.response is not None and error.response.status == case.status
    assert rule.meaning and rule.effect


def test_the_code_is_read_before_the_legacy_status() -> None:
    # the legacy mirror says one thing, the current field another: the current one wins
    error = problem_from(401, envelope("quota_exceeded", legacy="invalid_api_key"), {}, now=NOW)
    assert isinstance(error, QuotaExceededError)
    error = problem_from(429, envelope("rate_limit_exceeded", legacy="too_many_concurrent_requests"), {})
    assert isinstance(error, RateLimitedError) and error.kind == "rate_limit_exceeded"
    # an unknown code falls back to the legacy status
    error = problem_from(429, envelope("brand_new_code", legacy="too_many_concurrent_requests"), {})
    assert isinstance(error, RateLimitedError) and error.kind == "concurrent_limit_exceeded"
    assert error.response is not None and error.response.api_code == "brand_new_code"


def test_the_legacy_status_alone_still_works() -> None:
    error = problem_from(404, {"detail": {"status": "voice_not_found", "message": "no"}}, {}, request=REQUEST)
    assert isinstance(error, ApiError) and error.api_status == "voice_not_found"
    assert error.response is not None and error.response.api_code == "voice_not_found"


@pytest.mark.parametrize(("code", "kind"), [("concurrent_limit_exceeded", "concurrent_limit_exceeded"),
                                            ("too_many_concurrent_requests", "concurrent_limit_exceeded"),
                                            ("rate_limit_exceeded", "rate_limit_exceeded"),
                                            ("system_busy", "system_busy"), (None, "rate_limited"),
                                            ("whatever", "rate_limited")])
def test_the_429_kinds_are_normalised(code: str | None, kind: str) -> None:
    assert limit_kind(code) == kind


def test_the_request_id_comes_from_the_body_when_the_header_is_missing() -> None:
    error = problem_from(503, envelope("maintenance", request_id="abc123"), {})
    assert error.request_id == "abc123"
    assert error.response is not None and error.response.headers["request-id"] == "abc123"
    with_header = problem_from(503, envelope("maintenance", request_id="abc123"), {"request-id": "hdr-9"})
    assert with_header.request_id == "hdr-9"
    # a body id that is not an id (too long, control characters, not a string) is not used
    for odd in ("x" * 500, "id\x1b[31m", 17):
        error = problem_from(503, envelope("maintenance", request_id=odd), {})  # type: ignore[arg-type]
        assert error.request_id is None


def test_a_not_charged_5xx_records_no_cost() -> None:
    charged = problem_from(502, envelope("bad_gateway", message="upstream died"), {"character-cost": "34"})
    assert charged.response is not None and charged.response.headers["character-cost"] == "34"
    for message in ("The request was not charged; retry it.", "You have not been billed for this request.",
                    "no charge was made"):
        error = problem_from(500, envelope("internal_server_error", message=message), {"character-cost": "34"})
        assert error.response is not None and error.response.headers["character-cost"] == "0", message
    flagged = problem_from(503, envelope("maintenance", charged=False), {"character-cost": "12"})
    assert flagged.response is not None and flagged.response.headers["character-cost"] == "0"


def test_retry_after_is_kept_on_throttles_and_5xx() -> None:
    throttled = problem_from(429, envelope("system_busy"), {"retry-after": "3"})
    assert isinstance(throttled, RateLimitedError) and throttled.retry_after_s == 3.0
    busy = problem_from(503, envelope("maintenance"), {"Retry-After": "7"})
    assert isinstance(busy, TransientError) and busy.retry_after_s == 7.0


@pytest.mark.parametrize(("detail", "headers", "expected"), [
    ({"resets_at": NOW + 3600}, {}, NOW + 3600),
    ({"next_character_count_reset_unix": int(NOW) + 60}, {}, NOW + 60),
    ({"resets_at": (NOW + 120) * 1000}, {}, NOW + 120),  # milliseconds
    ({"resets_at": "2025-06-15T16:26:40Z"}, {}, 1_750_004_800.0),
    ({}, {"retry-after": "90"}, NOW + 90),
    ({"resets_at": "soon"}, {}, None),
    ({"resets_at": NOW + 10 * 365 * 86_400}, {}, None),  # ten years away: not believed
    ({"resets_at": float("nan")}, {}, None),
    ({}, {}, None),
])
def test_the_quota_reset_is_read_when_the_answer_says_it(detail: dict[str, Any], headers: dict[str, str],
                                                          expected: float | None) -> None:
    error = problem_from(401, envelope("quota_exceeded", **detail), headers, now=NOW)
    assert isinstance(error, QuotaExceededError)
    assert error.resets_at == (pytest.approx(expected) if expected is not None else None)
    if expected is None:
        assert "did not say when they reset" in error.message
    else:
        assert "they reset at 20" in error.message and "UTC" in error.message


ODD_BODIES: dict[str, Any] = {
    "detail null": {"detail": None},
    "detail a list of non-objects": {"detail": [1, "two", None, [3]]},
    "loc null": {"detail": [{"loc": None, "msg": "bad", "type": "x"}]},
    "loc of odd parts": {"detail": [{"loc": [None, 3, {"a": 1}], "msg": None}]},
    "detail a string": {"detail": "nope"},
    "detail a number": {"detail": 42},
    "detail true": {"detail": True},
    "detail an object of odd types": {"detail": {"code": 5, "status": ["x"], "message": {"m": 1}, "param": [1],
                                                 "request_id": None, "type": 3.5}},
    "body a list": [1, 2, 3],
    "body a string": "plain",
    "body a number": 3.25,
    "body null": None,
    "body not JSON": NonJson("\x00\x01 garbage \x1b[2J"),
    "body an HTML page": NonJson("<!DOCTYPE html><html><head><title>Blocked by proxy</title></head></html>"),
    "body empty text": NonJson(""),
}


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422, 429, 500, 503, 418])
@pytest.mark.parametrize("name", list(ODD_BODIES))
def test_any_body_is_summarised_without_an_exception(status: int, name: str) -> None:
    error = problem_from(status, ODD_BODIES[name], {"character-cost": "NaN", "retry-after": "1e999"}, request=REQUEST)
    assert isinstance(error, PipelineError)
    assert "\x1b" not in error.message and "\x00" not in error.message
    assert error.to_record()["message"] == error.message


def test_an_html_body_is_named_by_its_title() -> None:
    error = problem_from(502, read_body(b"<html><head><title>502 Bad Gateway</title></head><body>x</body></html>"), {})
    assert "HTML page (502 Bad Gateway)" in error.message


@pytest.mark.parametrize(("raw", "expected"), [
    (b"", None), (b"  \n", None), (b'{"detail": 1}', {"detail": 1}), (b"[" * 100_000, NonJson("[" * 100_000)),
    (b"\xff\xfe", NonJson("\ufffd\ufffd")), (b"1" * 10_000, NonJson("1" * 10_000)),
])
def test_read_body_never_raises(raw: bytes, expected: Any) -> None:
    assert read_body(raw) == expected


def test_a_long_foreign_message_is_cut() -> None:
    error = problem_from(400, envelope("invalid_request", type_="invalid_request", message="x" * 10_000), {})
    assert len(error.message) < 400
