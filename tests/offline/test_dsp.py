"""Pure functions of the offline server: DSP pieces, block planning and stitching, levels, denoising, request
validation, voice-setting mapping, fault draws and billing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyworld as pw

from pipeline.local.samples import speech_like
from pipeline.offline import blocks, denoise, dsp, effects, level
from pipeline.offline.endpoint import credits_for
from pipeline.offline.faults import FaultInjector, FaultSettings
from pipeline.offline.params import parse_request
from pipeline.offline.problems import Invalid
from pipeline.offline.voices import DEFAULT_VOICE_ID, VOICES

RATE = dsp.WORK_RATE_HZ


def median_f0(x: np.ndarray) -> float:
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pw.dio(x64, RATE, f0_floor=60, f0_ceil=700, frame_period=5.0)
    f0 = pw.stonemask(x64, f0, t, RATE)
    return float(np.median(f0[f0 > 0]))


def si_snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    target = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    return float(10 * np.log10(np.sum(target**2) / np.sum((estimate - target) ** 2)))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech_like(2.0, RATE, f0_hz=120.0, seed=11).astype(np.float64)


def test_warp_envelope_moves_a_peak_by_the_ratio() -> None:
    envelope = np.full((3, 513), 1e-6)
    envelope[:, 100] = 1.0
    assert np.argmax(dsp.warp_envelope(envelope, 1.2)[0]) == 120
    assert np.argmax(dsp.warp_envelope(envelope, 0.8)[0]) == 80
    assert dsp.warp_envelope(envelope, 1.0) is envelope


def test_shape_log_f0_ratio_smoothing_style_monotone_and_whisper() -> None:
    rng = np.random.default_rng(0)
    f0 = 120.0 * np.exp(0.1 * rng.standard_normal(400))
    f0[150:170] = 0.0
    no_drift = np.zeros(len(f0))
    log_f0, voiced = dsp.shape_log_f0(f0, dsp.Transform(f0_ratio=2.0), no_drift)
    assert np.array_equal(voiced, f0 > 0)
    assert np.exp(np.median(log_f0[voiced])) == pytest.approx(2.0 * np.median(f0[f0 > 0]), rel=1e-6)
    smooth, _ = dsp.shape_log_f0(f0, dsp.Transform(smoothing_frames=41), no_drift)
    wide, _ = dsp.shape_log_f0(f0, dsp.Transform(excursion=2.0), no_drift)
    flat, _ = dsp.shape_log_f0(f0, dsp.Transform(monotone=1.0), no_drift)
    base, _ = dsp.shape_log_f0(f0, dsp.Transform(), no_drift)
    assert np.std(smooth[voiced]) < 0.5 * np.std(base[voiced])
    assert np.std(wide[voiced]) == pytest.approx(2.0 * np.std(base[voiced]), rel=1e-6)
    assert np.ptp(flat) == pytest.approx(0.0, abs=1e-12)
    _, silent_voiced = dsp.shape_log_f0(f0, dsp.Transform(whisper=True), no_drift)
    assert not silent_voiced.any()


def test_smooth_noise_is_seeded_and_unit_scaled() -> None:
    a = dsp.smooth_noise(np.random.default_rng([5, 0]), 1000)
    b = dsp.smooth_noise(np.random.default_rng([5, 0]), 1000)
    c = dsp.smooth_noise(np.random.default_rng([6, 0]), 1000)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.std(a) == pytest.approx(1.0)


def test_convert_keeps_length_and_scales_f0(clip: np.ndarray) -> None:
    y = dsp.convert(clip, dsp.Transform(f0_ratio=1.5, formant_ratio=1.1), np.random.default_rng(0))
    assert len(y) == len(clip)
    assert median_f0(y) / median_f0(clip) == pytest.approx(1.5, rel=0.05)
    slower = dsp.convert(clip, dsp.Transform(speed=0.8), np.random.default_rng(0))
    assert len(slower) == round(len(clip) / 0.8)


def test_plan_blocks_cuts_at_the_quiet_frame_and_covers_the_input() -> None:
    x = np.random.default_rng(1).normal(0, 0.1, 25 * RATE)
    x[int(9.3 * RATE):int(9.4 * RATE)] = 0.0  # the only quiet spot within 2 s of the first nominal boundary
    plan = blocks.plan_blocks(x)
    assert plan.bounds[0] == 0 and plan.bounds[-1] == len(x)
    assert int(9.3 * RATE) <= plan.bounds[1] < int(9.4 * RATE)
    assert all(b - a >= blocks.MIN_BLOCK_S * RATE for a, b in zip(plan.bounds, plan.bounds[1:], strict=False))
    assert blocks.plan_blocks(x[: 3 * RATE]).bounds == (0, 3 * RATE)
    assert len(blocks.plan_blocks(x, first_block_s=1.25).bounds) > len(plan.bounds)


def test_stitcher_rebuilds_overlapping_blocks_exactly() -> None:
    signal = np.random.default_rng(2).normal(size=1000)
    fade = 10
    cuts = [0, 300, 650, 1000]
    out = blocks.Stitcher(fade)
    pieces = []
    for i in range(3):
        lo = cuts[i] - fade if i > 0 else 0
        hi = cuts[i + 1] + fade if i < 2 else 1000
        pieces.append(out.push(signal[lo:hi], last=i == 2))
    assert np.allclose(np.concatenate(pieces), signal)


def test_render_block_matches_loudness_and_stays_under_the_ceiling() -> None:
    loud = speech_like(3.0, RATE, seed=4).astype(np.float64)
    loud *= 0.99 / np.max(np.abs(loud))
    voice = VOICES["BKkWQENix2VWeAv6YV5R"]  # the deepest voice: WORLD raises its peaks the most
    transform = effects.transform_for(voice, {})
    plan = blocks.plan_blocks(loud)
    y = blocks.render_block(loud, plan, 0, transform, seed=1)
    assert len(y) == len(loud)
    assert level.true_peak(y, RATE) <= 10 ** (level.PEAK_CEILING_DBFS / 20) + 1e-6
    quiet = loud * 0.1
    yq = blocks.render_block(quiet, plan, 0, transform, seed=1)
    assert level.integrated_lufs(yq, RATE) == pytest.approx(level.integrated_lufs(quiet, RATE), abs=0.5)


def test_match_gain_falls_back_to_rms_for_short_clips() -> None:
    ref = np.full(1000, 0.1)
    assert level.match_gain(ref, ref * 0.5, RATE) == pytest.approx(2.0)
    assert level.match_gain(ref, np.zeros(1000), RATE) == 1.0


def test_denoise_is_aligned_and_raises_si_snr(clip: np.ndarray) -> None:
    noise = np.random.default_rng(3).normal(size=len(clip))
    noise *= np.sqrt(np.mean(clip**2) / np.mean(noise**2))  # 0 dB white noise
    noisy = clip + noise
    cleaned = denoise.denoise(noisy, RATE).astype(np.float64)
    assert len(cleaned) == len(clip)
    lags = range(-20, 21)
    corr = [np.dot(clip[100:-100], cleaned[100 + lag:len(cleaned) - 100 + lag]) for lag in lags]
    assert list(lags)[int(np.argmax(corr))] == 0
    assert si_snr_db(clip, cleaned) - si_snr_db(clip, noisy) > 3.0


def test_similarity_boost_and_settings_map_to_the_transform() -> None:
    voice = VOICES[DEFAULT_VOICE_ID]
    default = effects.transform_for(voice, {})
    assert default.formant_ratio == pytest.approx(voice.formant_ratio)
    assert default.smoothing_frames == 21 and default.presence_db > 0 and default.speed == 1.0
    custom = effects.transform_for(voice, {"similarity_boost": 0.0, "stability": 1.0, "style": 1.0,
                                           "use_speaker_boost": False, "speed": 0.8})
    assert custom.formant_ratio == pytest.approx(voice.formant_ratio**0.5)
    assert custom.smoothing_frames == 41 and custom.excursion == 2.0 and custom.presence_db == 0.0
    assert custom.drift_semitones < default.drift_semitones and custom.speed == 0.8


def test_parse_request_reports_every_problem_in_the_service_shape() -> None:
    with pytest.raises(Invalid) as caught:
        parse_request({"output_format": "wav", "optimize_streaming_latency": "9"},
                      {"seed": "4294967296", "voice_settings": json.dumps({"speed": 2}), "model_id": "eleven_v3",
                       "file_format": "flac"}, audio=None)
    locs = {tuple(item["loc"]) for item in caught.value.problems}
    # model_id is a plain string in the vendor's schema: which models exist is the account's answer (404/400)
    assert locs == {("query", "output_format"), ("query", "optimize_streaming_latency"), ("body", "seed"),
                    ("body", "voice_settings", "speed"), ("body", "file_format"), ("body", "audio")}
    assert all(set(item) >= {"loc", "msg", "type"} for item in caught.value.problems)
    with pytest.raises(Invalid) as text_audio:
        parse_request({}, {}, audio="not a file")
    assert [item["loc"] for item in text_audio.value.problems] == [["body", "audio"]]
    ok = parse_request({"enable_logging": "false"}, {"voice_settings": "", "unknown": "x", "seed": "0",
                                                     "model_id": "eleven_v3"}, audio=object())
    assert ok.query.enable_logging is False and ok.settings_overrides == {} and ok.form.seed == 0
    assert ok.form.model_id == "eleven_v3"


def test_fault_draws_are_reproducible_and_follow_the_rates() -> None:
    knobs = FaultSettings(rate_429=0.2, rate_500=0.1, rate_503=0.1, rate_cut=0.5, fault_seed=9)
    first = FaultInjector(knobs).draw()
    injector = FaultInjector(knobs)
    draws = [injector.draw() for _ in range(2000)]
    assert draws[0] == first
    statuses = [d.status for d in draws]
    assert statuses.count(429) / 2000 == pytest.approx(0.2, abs=0.03)
    assert statuses.count(500) / 2000 == pytest.approx(0.1, abs=0.03)
    assert sum(d.cut_fraction is not None for d in draws) / 2000 == pytest.approx(0.5, abs=0.04)
    assert all(0.1 <= d.cut_fraction <= 0.9 for d in draws if d.cut_fraction is not None)
    with pytest.raises(ValueError):
        injector.update({"rate_500": 0.9})
    assert injector.update({"fault_seed": 9}).fault_seed == 9 and injector.draw() == draws[0]


def test_credits_are_rounded_up_to_whole_credits() -> None:
    assert credits_for(60.0, 1000 / 60) == 1000
    assert credits_for(1.0, 1000 / 60) == 17
    assert credits_for(0.0, 1000 / 60) == 0
