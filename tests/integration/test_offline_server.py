"""The offline speech-to-speech server over real loopback HTTP: formats, error shapes, determinism, voices, speed,
denoising, loudness, fault knobs, the concurrency cap, and the vendor's SDK (conversions and account reads). The
vendor's contract itself (account bodies against its schemas, tiers, quota, the 429 kinds, the 400s) is
``test_offline_contract``.

The no-fault server is the session's ``offline_sts``; fault tests run on their own server started with fault flags and
retuned through ``PUT /_admin/faults`` (each test starts from the flags' values).
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import pyworld as pw
import soundfile as sf
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError as SdkApiError

from pipeline.formats import OUTPUT_FORMATS, OutputFormat
from pipeline.local.samples import speech_like
from pipeline.local.services import LocalStack
from pipeline.offline.faults import FaultInjector, FaultSettings
from pipeline.offline.level import PEAK_CEILING_DBFS, integrated_lufs
from pipeline.offline.voices import DEFAULT_VOICE_ID, VOICES

RATE = 16000
KEY = "offline-server-test-key"
#: flags of the fault server; every fault test starts from these knobs
FAULT_FLAGS = ("--api-key", KEY, "--max-concurrent", "2", "--fault-seed", "7", "--max-input-seconds", "4",
               "--max-input-bytes", "400000")
BASE_KNOBS = {"max_concurrent": 2, "rate_limit_per_minute": None, "rate_429": 0.0, "rate_500": 0.0, "rate_503": 0.0,
              "rate_cut": 0.0, "latency_fixed_s": 0.0, "latency_per_audio_second_s": 0.0, "retry_after_s": 1,
              "omit_error_request_id": False, "fault_seed": 7}
ENVELOPE_KEYS = {"type", "code", "message", "request_id", "param", "status"}


# --- helpers

def wav_bytes(x: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def post(url: str, audio: bytes, *, voice: str = DEFAULT_VOICE_ID, stream: bool = False, key: str | None = KEY,
         params: dict[str, Any] | None = None, data: dict[str, str] | None = None) -> httpx.Response:
    path = f"/v1/speech-to-speech/{voice}" + ("/stream" if stream else "")
    headers = {"xi-api-key": key} if key else {}
    return httpx.post(url + path, params=params, data=data, headers=headers,
                      files={"audio": ("input.wav", audio, "audio/wav")}, timeout=60)


def pcm(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<i2").astype(np.float64) / 32768.0


def ffmpeg_decode(content: bytes, fmt: OutputFormat) -> np.ndarray:
    done = subprocess.run(["ffmpeg", "-v", "error", *fmt.ffmpeg_input_args(), "-i", "pipe:0", "-f", "s16le",
                           "-ac", "1", "-ar", str(fmt.sample_rate), "pipe:1"], input=content, capture_output=True,
                          check=True)
    return np.frombuffer(done.stdout, dtype="<i2")


def ffprobe_stream(content: bytes, fmt: OutputFormat) -> tuple[int, int]:
    done = subprocess.run(["ffprobe", "-v", "error", *fmt.ffmpeg_input_args(), "-show_entries",
                           "stream=sample_rate,channels", "-of", "csv=p=0", "pipe:0"], input=content,
                          capture_output=True, check=True)
    rate, channels = done.stdout.decode().strip().split(",")
    return int(rate), int(channels)


def f0_stats(x: np.ndarray) -> tuple[float, float]:
    """Median f0 over voiced frames and the voiced share (dio + stonemask)."""
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pw.dio(x64, RATE, f0_floor=60, f0_ceil=700, frame_period=5.0)
    f0 = pw.stonemask(x64, f0, t, RATE)
    voiced = f0[f0 > 0]
    return (float(np.median(voiced)) if len(voiced) else 0.0), float(np.mean(f0 > 0))


def frame_power(x: np.ndarray, frame: int = 320) -> np.ndarray:
    n = len(x) // frame
    return np.mean(np.square(x[:n * frame]).reshape(n, frame), axis=1)


# --- fixtures

@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech_like(2.0, RATE, f0_hz=120.0, seed=21)


@pytest.fixture(scope="module")
def clip_wav(clip: np.ndarray) -> bytes:
    return wav_bytes(clip)


@pytest.fixture(scope="module")
def url(offline_sts: LocalStack) -> str:
    return offline_sts.sts_url


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(workdir=tmp_path_factory.mktemp("faulty"), api_key=KEY) as local:
        local.start_sts(*FAULT_FLAGS)
        yield local


@pytest.fixture(scope="module")
def initial_knobs(fault_stack: LocalStack) -> dict[str, Any]:
    """The fault server's knobs as its flags set them, read before any test changes them."""
    return httpx.get(f"{fault_stack.sts_url}/_admin/faults").json()  # type: ignore[no-any-return]


@pytest.fixture
def faulty(fault_stack: LocalStack, initial_knobs: dict[str, Any]) -> Iterator[str]:
    """The fault server's URL, knobs back at the flags' values and counters zeroed."""
    url = fault_stack.sts_url
    assert httpx.put(f"{url}/_admin/faults", json=BASE_KNOBS).status_code == 200
    httpx.post(f"{url}/_admin/reset").raise_for_status()
    yield url


def set_knobs(url: str, **knobs: Any) -> dict[str, Any]:
    response = httpx.put(f"{url}/_admin/faults", json=knobs)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_admin/stats").json()  # type: ignore[no-any-return]


# --- formats

@pytest.mark.parametrize("name", list(OUTPUT_FORMATS))
def test_every_output_format_decodes_to_its_rate_mono_and_the_input_duration(url: str, clip: np.ndarray,
                                                                             clip_wav: bytes, name: str) -> None:
    fmt = OUTPUT_FORMATS[name]
    response = post(url, clip_wav, stream=True, params={"output_format": name}, data={"seed": "1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == fmt.content_type
    assert ffprobe_stream(response.content, fmt) == (fmt.sample_rate, 1)
    decoded = ffmpeg_decode(response.content, fmt)
    expected = len(clip) * fmt.sample_rate / RATE
    extra = len(decoded) - expected
    if fmt.codec == "mp3":
        # the stream starts past LAME's delay (encode.MP3_DELAY_SAMPLES), so only padding up to a whole frame is
        # left: 1152 samples at 32+ kHz, 576 below
        frame = 1152 if fmt.sample_rate >= 32000 else 576
        assert 0 <= extra <= frame + 0.010 * fmt.sample_rate
    else:
        assert abs(extra) <= 0.010 * fmt.sample_rate


def test_raw_pcm_input_is_accepted(url: str, clip: np.ndarray) -> None:
    raw = (clip * 32767).astype("<i2").tobytes()
    response = post(url, raw, params={"output_format": "pcm_16000"}, data={"file_format": "pcm_s16le_16"})
    assert len(pcm(response)) == len(clip)


# --- error shapes

def test_validation_errors_have_the_service_shape(url: str, clip_wav: bytes) -> None:
    response = post(url, clip_wav, params={"output_format": "wav_44100"},
                    data={"seed": "-3", "voice_settings": '{"stability": 3}', "model_id": "eleven_multilingual_v2"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    # the model is the account's check (400/404), made only once the form is valid
    assert {tuple(item["loc"]) for item in detail} == {("query", "output_format"), ("body", "seed"),
                                                       ("body", "voice_settings", "stability")}
    assert all(isinstance(item["msg"], str) and isinstance(item["type"], str) for item in detail)
    missing = httpx.post(f"{url}/v1/speech-to-speech/{DEFAULT_VOICE_ID}", headers={"xi-api-key": KEY},
                         data={"model_id": "eleven_multilingual_sts_v2"})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"type": "missing", "loc": ["body", "audio"], "msg": "Field required",
                                         "input": None}]
    not_a_file = httpx.post(f"{url}/v1/speech-to-speech/{DEFAULT_VOICE_ID}", headers={"xi-api-key": KEY},
                            data={"audio": "not a file"})
    assert not_a_file.status_code == 422 and not_a_file.json()["detail"][0]["loc"] == ["body", "audio"]


def test_unknown_voice_bad_audio_and_bad_key(url: str, faulty: str, clip_wav: bytes) -> None:
    unknown = post(url, clip_wav, voice="NoSuchVoice000000000")
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["status"] == "voice_not_found"
    garbage = post(url, b"this is not audio" * 50)
    assert garbage.status_code == 400
    assert garbage.json()["detail"]["status"] == "invalid_audio"
    odd = post(url, b"\x00" * 1001, data={"file_format": "pcm_s16le_16"})
    assert odd.status_code == 400
    for key in (None, "wrong-key"):
        denied = post(faulty, clip_wav, key=key)
        assert denied.status_code == 401
        detail = denied.json()["detail"]
        assert set(detail) == ENVELOPE_KEYS and detail["code"] == detail["status"] == "invalid_api_key"
        assert detail["type"] == "authentication_error" and detail["request_id"] == denied.headers["request-id"]
        assert "wrong-key" not in denied.text
    assert httpx.get(f"{faulty}/v1/voices").status_code == 401


def test_limits_answer_400_naming_the_limit(faulty: str) -> None:
    too_long = post(faulty, wav_bytes(speech_like(5.0, RATE, seed=2)))
    assert too_long.status_code == 400
    problem = too_long.json()["detail"]
    assert (problem["code"], problem["type"], problem["param"]) == ("audio_too_long", "validation_error", "audio")
    assert "limit is 4 s" in problem["message"]
    too_big = post(faulty, b"\x00" * 400_002, data={"file_format": "pcm_s16le_16"})
    assert too_big.status_code == 400
    problem = too_big.json()["detail"]
    assert (problem["code"], problem["param"]) == ("request_too_large", "audio")
    assert "400000 bytes" in problem["message"]
    assert stats(faulty)["requests_by_code"] == {"audio_too_long": 1, "request_too_large": 1}


def test_voices_and_models_listings(url: str) -> None:
    headers = {"xi-api-key": KEY}
    voices = httpx.get(f"{url}/v1/voices", headers=headers).json()["voices"]
    assert {v["voice_id"] for v in voices} == set(VOICES)
    assert all(len(v["voice_id"]) == 20 and v["category"] == "premade" and v["labels"] for v in voices)
    models = {m["model_id"]: m for m in httpx.get(f"{url}/v1/models", headers=headers).json()}
    assert models["eleven_english_sts_v2"]["can_do_voice_conversion"] is True
    assert models["eleven_multilingual_sts_v2"]["can_do_voice_conversion"] is True
    assert models["eleven_multilingual_v2"]["can_do_voice_conversion"] is False


# --- determinism, voices, settings

def test_same_seed_same_pcm_other_seed_or_voice_differs(url: str, clip_wav: bytes) -> None:
    params = {"output_format": "pcm_16000"}
    first = post(url, clip_wav, params=params, data={"seed": "42"})
    again = post(url, clip_wav, stream=True, params=params, data={"seed": "42"})
    assert first.content == again.content
    assert post(url, clip_wav, params=params, data={"seed": "43"}).content != first.content
    assert post(url, clip_wav, voice="BKkWQENix2VWeAv6YV5R", params=params, data={"seed": "42"}).content \
        != first.content
    assert post(url, clip_wav, params=params).content != post(url, clip_wav, params=params).content


@pytest.fixture(scope="module")
def voice_outputs(url: str, clip_wav: bytes) -> dict[str, np.ndarray]:
    return {voice_id: pcm(post(url, clip_wav, voice=voice_id, params={"output_format": "pcm_16000"},
                               data={"seed": "5"})) for voice_id in VOICES}


@pytest.mark.parametrize("voice_id", list(VOICES))
def test_each_voice_moves_f0_and_keeps_duration(voice_outputs: dict[str, np.ndarray], clip: np.ndarray,
                                                voice_id: str) -> None:
    voice = VOICES[voice_id]
    out = voice_outputs[voice_id]
    assert len(out) == len(clip)
    in_f0, in_voiced = f0_stats(clip)
    out_f0, out_voiced = f0_stats(out)
    if voice.whisper:
        assert out_voiced < 0.2 * in_voiced
    else:
        assert out_f0 / in_f0 == pytest.approx(voice.f0_ratio, rel=0.08)


@pytest.mark.parametrize("voice_id", list(VOICES))
def test_loudness_matches_and_nothing_clips(voice_outputs: dict[str, np.ndarray], clip: np.ndarray,
                                            voice_id: str) -> None:
    out = voice_outputs[voice_id]
    assert integrated_lufs(out, RATE) == pytest.approx(integrated_lufs(clip, RATE), abs=1.0)
    assert np.max(np.abs(out)) <= 10 ** (PEAK_CEILING_DBFS / 20) + 1 / 32768


def test_a_full_scale_input_is_limited_below_the_ceiling(url: str) -> None:
    loud = speech_like(2.0, RATE, seed=8)
    loud = loud / np.max(np.abs(loud))
    for voice_id in ("BKkWQENix2VWeAv6YV5R", "vK7n2rg6OeynABb4ilbv"):
        out = pcm(post(url, wav_bytes(loud), voice=voice_id, params={"output_format": "pcm_16000"}))
        assert np.max(np.abs(out)) <= 10 ** (PEAK_CEILING_DBFS / 20) + 1 / 32768


@pytest.mark.parametrize("speed", [0.8, 1.2])
def test_speed_changes_duration(url: str, clip: np.ndarray, clip_wav: bytes, speed: float) -> None:
    out = pcm(post(url, clip_wav, params={"output_format": "pcm_16000"},
                   data={"voice_settings": f'{{"speed": {speed}}}'}))
    assert abs(len(out) - len(clip) / speed) <= 1


def test_denoising_raises_the_speech_to_noise_ratio(url: str) -> None:
    clean = speech_like(3.0, RATE, seed=31)
    noise = np.random.default_rng(31).normal(size=len(clean))
    noisy = clean + noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2))  # 0 dB white noise
    quiet = frame_power(clean) < np.percentile(frame_power(clean), 20)  # the clean reference's pauses

    def snr_db(denoise: bool) -> float:
        out = pcm(post(url, wav_bytes(noisy), params={"output_format": "pcm_16000"},
                       data={"seed": "3", "remove_background_noise": str(denoise).lower()}))
        power = frame_power(out)
        return float(10 * np.log10(np.mean(power[~quiet]) / np.mean(power[quiet])))

    assert snr_db(True) - snr_db(False) >= 6.0


# --- faults

def test_fault_flags_are_the_starting_knobs(initial_knobs: dict[str, Any], faulty: str) -> None:
    assert initial_knobs == BASE_KNOBS
    bad = httpx.put(f"{faulty}/_admin/faults", json={"rate_500": 2})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "rate_500"]


def test_status_faults_follow_the_seeded_draws(faulty: str) -> None:
    knobs = set_knobs(faulty, rate_429=0.25, rate_500=0.25, rate_503=0.25, fault_seed=3)
    short = wav_bytes(speech_like(0.5, RATE, seed=1))
    responses = [post(faulty, short, params={"output_format": "pcm_16000"}) for _ in range(16)]
    injector = FaultInjector(FaultSettings.model_validate(knobs))
    expected = [injector.draw().status or 200 for _ in range(16)]
    assert [r.status_code for r in responses] == expected
    assert {429, 500, 503, 200} <= set(expected)
    for response in responses:
        if response.status_code == 429:
            assert response.json()["detail"]["status"] == "system_busy"
            assert response.headers["retry-after"] == "1"
        elif response.status_code in (500, 503):
            detail = response.json()["detail"]
            assert set(detail) == ENVELOPE_KEYS and "not charged" in detail["message"]
            assert detail["code"] == {500: "internal_server_error", 503: "maintenance"}[response.status_code]
            assert response.headers["character-cost"] == "0"
    counters = stats(faulty)
    assert counters["requests_total"] == 16
    assert counters["requests_by_status"] == {str(code): expected.count(code) for code in sorted(set(expected))}
    assert counters["successes"] == expected.count(200)


def test_cut_streams_end_early(faulty: str, clip: np.ndarray, clip_wav: bytes) -> None:
    set_knobs(faulty, rate_cut=1.0)
    full_bytes = 2 * len(clip)
    for suffix in ("/stream", ""):
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
                "POST", f"{faulty}/v1/speech-to-speech/{DEFAULT_VOICE_ID}{suffix}",
                params={"output_format": "pcm_16000"}, headers={"xi-api-key": KEY},
                files={"audio": ("a.wav", clip_wav)}, timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += len(chunk)
        assert received < 0.95 * full_bytes
    set_knobs(faulty, rate_cut=0.5, fault_seed=11)
    cut = 0
    for _ in range(8):
        try:
            post(faulty, clip_wav, stream=True, params={"output_format": "mp3_22050_32"})
        except httpx.RemoteProtocolError:
            cut += 1
    assert 0 < cut < 8
    counters = stats(faulty)
    assert counters["cut_streams"] == cut + 2 and counters["successes"] == 8 - cut


def test_concurrency_cap_answers_429_and_holds(faulty: str, clip_wav: bytes) -> None:
    set_knobs(faulty, latency_fixed_s=1.5)
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: post(faulty, clip_wav, params={"output_format": "pcm_16000"}),
                                  range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(429) >= 1
    for response in responses:
        assert response.headers["maximum-concurrent-requests"] == "2"
        if response.status_code == 429:
            assert response.json()["detail"]["status"] == "too_many_concurrent_requests"
            assert response.json()["detail"]["code"] == "concurrent_limit_exceeded"
            assert "retry-after" in response.headers
    counters = stats(faulty)
    assert counters["max_in_flight"] <= 2 and counters["in_flight"] == 0


def test_latency_knobs_set_a_floor_on_response_time(faulty: str, clip_wav: bytes) -> None:
    set_knobs(faulty, latency_fixed_s=0.4, latency_per_audio_second_s=0.3)
    started = time.monotonic()
    response = post(faulty, clip_wav, stream=True, params={"output_format": "pcm_16000"})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4 + 0.3 * 2.0


def test_headers_billing_and_stats_reset(faulty: str, clip_wav: bytes) -> None:
    logged = post(faulty, clip_wav, params={"output_format": "pcm_16000"})
    private = post(faulty, clip_wav, params={"output_format": "pcm_16000", "enable_logging": "false"})
    assert logged.headers["character-cost"] == "34"  # 2 s at 1000 credits a minute, rounded up
    assert len(logged.headers["history-item-id"]) == 20 and "history-item-id" not in private.headers
    assert logged.headers["request-id"] != private.headers["request-id"]
    assert logged.headers["current-concurrent-requests"] == "1"
    counters = stats(faulty)
    assert counters["billed_credits"] == 68 and counters["requests_by_voice"] == {DEFAULT_VOICE_ID: 2}
    reset = httpx.post(f"{faulty}/_admin/reset").json()
    assert reset["requests_total"] == 0 and reset["billed_credits"] == 0 and reset["requests_by_status"] == {}


# --- the vendor's SDK

def test_vendor_sdk_stream_and_convert(url: str, clip: np.ndarray, clip_wav: bytes) -> None:
    client = ElevenLabs(api_key=KEY, base_url=url)
    streamed = b"".join(client.speech_to_speech.stream(
        voice_id=DEFAULT_VOICE_ID, audio=("input.wav", clip_wav, "audio/wav"), output_format="pcm_16000",
        model_id="eleven_multilingual_sts_v2", seed=9, remove_background_noise=False,
        voice_settings='{"stability": 0.4, "style": 0.2}'))
    converted = b"".join(client.speech_to_speech.convert(
        voice_id=DEFAULT_VOICE_ID, audio=io.BytesIO(clip_wav), output_format="pcm_16000",
        model_id="eleven_multilingual_sts_v2", seed=9, voice_settings='{"stability": 0.4, "style": 0.2}'))
    assert streamed == converted and len(streamed) == 2 * len(clip)
    mp3 = b"".join(client.speech_to_speech.convert(voice_id=DEFAULT_VOICE_ID, audio=io.BytesIO(clip_wav)))
    assert len(ffmpeg_decode(mp3, OUTPUT_FORMATS["mp3_44100_128"])) > 0.9 * 2.0 * 44100


def test_vendor_sdk_reads_the_account(url: str) -> None:
    client = ElevenLabs(api_key=KEY, base_url=url)
    page = client.voices.search(page_size=2)
    assert [v.voice_id for v in page.voices] == list(VOICES)[:2] and page.has_more and page.total_count == len(VOICES)
    rest = client.voices.search(page_size=100, next_page_token=page.next_page_token)
    assert [v.voice_id for v in rest.voices] == list(VOICES)[2:] and not rest.has_more
    picked = client.voices.search(voice_ids=["vK7n2rg6OeynABb4ilbv", "NoSuchVoice000000000"])
    assert [v.voice_id for v in picked.voices] == ["vK7n2rg6OeynABb4ilbv"]
    voice = client.voices.get(DEFAULT_VOICE_ID)
    assert voice.name == "Lena" and voice.settings is not None and voice.settings.stability == 0.5
    with pytest.raises(SdkApiError) as missing:
        client.voices.get("NoSuchVoice000000000")
    assert missing.value.status_code == 404 and missing.value.body["detail"]["code"] == "voice_not_found"
    models = {m.model_id: m for m in client.models.list()}
    assert models["eleven_multilingual_sts_v2"].can_do_voice_conversion is True
    assert models["eleven_multilingual_v2"].can_do_voice_conversion is False
    subscription = client.user.subscription.get()
    assert subscription.tier == "pro" and subscription.character_limit == 500_000
    assert subscription.character_count >= 0 and subscription.next_character_count_reset_unix
    assert client.user.get().subscription.tier == "pro"
