"""The speech-to-speech endpoint: checks in the service's order, then the conversion, streamed or whole.

Order (docs/offline-server.md, *Checks*): API key (401 ``invalid_api_key``) → concurrency cap (429
``concurrent_limit_exceeded``) → request-rate window (429 ``rate_limit_exceeded``); from here the request is in
flight until its last byte → voice (404) → query and form (422) → model (404 ``model_not_found``, 400
``invalid_parameters``) → the plan's formats (403 ``output_format_not_allowed``) → upload size, decoding, duration
(400 ``request_too_large`` / ``invalid_audio`` / ``audio_too_long``) → credits left (401 ``quota_exceeded``) →
injected faults (429 ``system_busy``, 500, 503 ``maintenance``) → 200 with audio, possibly cut. Responses after the key
check carry the concurrency headers; a 200 carries ``character-cost`` (credits for the input's duration times the
model's ``character_cost_multiplier``, rounded up) and, unless ``enable_logging=false``, a ``history-item-id``.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import string
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pipeline.formats import FORMAT_MIN_TIER, OUTPUT_FORMATS, format_allowed
from pipeline.offline import params as validation
from pipeline.offline import problems
from pipeline.offline.blocks import BLOCK_S
from pipeline.offline.decode import decode_upload
from pipeline.offline.dsp import WORK_RATE_HZ
from pipeline.offline.effects import transform_for
from pipeline.offline.faults import Draw
from pipeline.offline.models import ModelSpec
from pipeline.offline.problems import Invalid, Problem
from pipeline.offline.render import RenderJob, expected_output_bytes, render
from pipeline.offline.responses import AudioResponse, Outcome
from pipeline.offline.state import ServerState
from pipeline.offline.voices import Voice

_ID_ALPHABET = string.ascii_letters + string.digits
#: the most of the latency floor left for the encoder's flush after the last block: blocks are paced to end this much
#: (or a tenth of the floor, if less) before it, and the last chunk is held until the floor itself
ENCODER_TAIL_S = 0.25


def credits_for(seconds: float, credits_per_second: float) -> int:
    """What a request is billed: input duration times the rate, rounded up to a whole credit."""
    return math.ceil(round(seconds * credits_per_second, 6))


def _history_item_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


@dataclass(frozen=True)
class Conversion:
    """A request that passed every check of its own: what to convert, how, and what it costs."""

    voice: Voice
    params: validation.ConversionParams
    model: ModelSpec
    samples: np.ndarray

    @property
    def audio_s(self) -> float:
        return len(self.samples) / WORK_RATE_HZ


async def handle(request: Request, voice_id: str, *, streaming: bool) -> Response:
    """Answer one conversion request."""
    state: ServerState = request.app.state.server
    arrival = time.monotonic()
    request_id = problems.new_request_id()
    headers: dict[str, str] = {}
    state.stats.arrived(voice_id)
    try:
        _gate(request, state, headers)
    except Problem as problem:
        return _refuse(state, problem, request_id, headers)
    current = state.stats.enter()
    headers.update({"current-concurrent-requests": str(current),
                    "maximum-concurrent-requests": str(state.reported_cap())})
    try:
        conversion = await _parse(request, state, voice_id)
        cost = credits_for(conversion.audio_s,
                           state.config.credits_per_second * conversion.model.character_cost_multiplier)
        draw = _draw(state, cost)
        response = await _respond(state, conversion, draw, cost, {**headers, "request-id": request_id},
                                  arrival, streaming)
    except (Problem, Invalid) as problem:
        state.stats.leave()
        return _refuse(state, problem, request_id, headers)
    except BaseException:
        state.stats.leave()
        raise
    state.stats.answered(200)
    return response


def _refuse(state: ServerState, problem: Problem | Invalid, request_id: str, headers: dict[str, str]) -> Response:
    state.stats.answered(problem.status, problem.code if isinstance(problem, Problem) else None)
    return problem.response(request_id, headers, omit_request_id_header=state.faults.settings.omit_error_request_id)


def _gate(request: Request, state: ServerState, headers: dict[str, str]) -> None:
    """Before admission: the key, the concurrency cap and the request-rate window."""
    if not state.key_accepted(request.headers.get("xi-api-key")):
        raise problems.invalid_api_key()
    knobs = state.faults.settings
    headers.update({"current-concurrent-requests": str(state.stats.in_flight),
                    "maximum-concurrent-requests": str(state.reported_cap())})
    cap = knobs.max_concurrent
    if cap is not None and state.stats.in_flight >= cap:
        raise Problem("concurrent_limit_exceeded",
                      f"Too many concurrent requests: {state.stats.in_flight} in flight, the plan allows {cap}. "
                      f"Wait for one to finish or lower your concurrency.", retry_after_s=knobs.retry_after_s)
    wait_s = state.rate_window.admit(knobs.rate_limit_per_minute)
    if wait_s is not None:
        raise Problem("rate_limit_exceeded",
                      f"Too many requests: more than {knobs.rate_limit_per_minute} a minute. Slow down and retry in "
                      f"{wait_s} s.", retry_after_s=wait_s)


async def _parse(request: Request, state: ServerState, voice_id: str) -> Conversion:
    """The request's own checks, cheapest first: voice, query and form, model, plan, upload, audio."""
    voice = state.account.voices.get(voice_id)
    if voice is None:
        raise problems.voice_not_found(voice_id)
    try:
        form = await request.form()
    except HTTPException as error:  # a malformed multipart body
        raise Problem("invalid_request", f"The request body could not be read: {error.detail}") from error
    try:
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str) and key != "audio"}
        audio = form.get("audio")
        params = validation.parse_request(request.query_params, fields, audio=audio)
        model = _model(state, params.form.model_id)
        _check_plan(state, params.query.output_format)
        assert isinstance(audio, UploadFile)  # parse_request refuses anything else
        data = await _read_audio(audio, state.config.max_input_bytes)
        samples = await decode_upload(data, params.form.file_format, max_seconds=state.config.max_input_seconds)
    finally:
        await form.close()
    return Conversion(voice, params, model, samples)


def _model(state: ServerState, model_id: str) -> ModelSpec:
    model = state.account.models.get(model_id)
    if model is None:
        raise Problem("model_not_found", f"A model with the model_id {model_id} was not found. GET /v1/models lists "
                      f"the models.", param="model_id")
    if not model.can_do_voice_conversion:
        convertible = [m for m in state.account.models.values() if m.can_do_voice_conversion]
        raise Problem("invalid_parameters", f"The model {model_id} cannot do voice conversion "
                      f"(can_do_voice_conversion is false). Use one that can"
                      + (f", such as {convertible[-1].model_id}." if convertible else "."), param="model_id")
    return model


def _check_plan(state: ServerState, output_format: str) -> None:
    tier = state.account.tier
    if not format_allowed(output_format, tier.name):
        raise Problem("output_format_not_allowed", f"The output format {output_format} needs the "
                      f"{FORMAT_MIN_TIER[output_format]} tier or above; this account is on the {tier.name} tier.",
                      param="output_format")


async def _read_audio(upload: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes; 400 ``request_too_large`` over the limit."""
    size = upload.size
    data = await upload.read() if size is None or size <= max_bytes else b""
    if size is None:
        size = len(data)
    if size > max_bytes:
        raise Problem("request_too_large", f"Audio file is {size} bytes; the limit is {max_bytes} bytes "
                      f"({max_bytes / 1024 / 1024:g} MB) per request. Split the recording or compress it.",
                      param="audio")
    return data


def _draw(state: ServerState, cost: int) -> Draw:
    """The credits left, then the injected faults; a request that passes both is charged ``cost`` now."""
    state.account.check_quota(cost)
    knobs = state.faults.settings
    draw = state.faults.draw()
    if draw.status == 429:
        state.stats.faults_injected["429"] += 1
        raise Problem("system_busy", "The system is experiencing heavy traffic, please try again later "
                      "(injected fault).", retry_after_s=knobs.retry_after_s)
    if draw.status == 500:
        state.stats.faults_injected["500"] += 1
        raise problems.not_charged("internal_server_error", "An internal error occurred (injected fault).")
    if draw.status == 503:
        state.stats.faults_injected["503"] += 1
        raise problems.not_charged("maintenance", "The service is down for maintenance (injected fault).")
    _bill(state, cost)
    return draw


def _bill(state: ServerState, cost: int) -> None:
    state.account.charge(cost)
    state.stats.billed_credits += cost


def _render_job(conversion: Conversion, engine: str) -> RenderJob:
    params = conversion.params
    latency = params.query.optimize_streaming_latency or 0
    return RenderJob(samples=conversion.samples, transform=transform_for(conversion.voice, params.settings_overrides),
                     seed=params.form.seed if params.form.seed is not None else secrets.randbelow(2**32),
                     output=OUTPUT_FORMATS[params.query.output_format],
                     remove_background_noise=params.form.remove_background_noise, first_block_s=BLOCK_S / 2**latency,
                     engine=engine)


async def _respond(state: ServerState, conversion: Conversion, draw: Draw, cost: int, headers: dict[str, str],
                   arrival: float, streaming: bool) -> Response:
    """The 200: audio chunks paced by the latency knobs, whole or streamed, cut where the draw says."""
    headers["character-cost"] = str(cost)
    if conversion.params.query.enable_logging:
        headers["history-item-id"] = _history_item_id()
    job = _render_job(conversion, state.config.engine)
    min_total_s = state.faults.settings.min_total_s(conversion.audio_s)
    blocks_done_s = max(0.0, min_total_s - min(ENCODER_TAIL_S, min_total_s / 10))

    async def pace(done_fraction: float) -> None:
        await _until(arrival + blocks_done_s * done_fraction)

    chunks = render(job, state.pool(), pace)
    cut_after = content_length = None
    if streaming:
        expected = expected_output_bytes(len(job.samples), job.transform.speed, job.output)
    else:
        body = await _whole(state, chunks, cost)
        content_length = expected = len(body)
        chunks = _pieces(body)
    chunks = _last_chunk_at(chunks, arrival + min_total_s)
    if draw.cut_fraction is not None:
        cut_after = int(expected * draw.cut_fraction)
        state.stats.faults_injected["cut"] += 1
    return AudioResponse(chunks, media_type=job.output.content_type, headers=headers,
                         on_finish=lambda outcome: _finished(state, outcome), cut_after_bytes=cut_after,
                         content_length=content_length)


async def _whole(state: ServerState, chunks: AsyncGenerator[bytes, None], cost: int) -> bytes:
    """The whole body, rendered before anything is sent; a conversion failure is a 500 and refunded."""
    try:
        return b"".join([chunk async for chunk in chunks])
    except Exception as error:
        _bill(state, -cost)
        raise problems.not_charged("internal_server_error",
                                   f"The conversion failed ({type(error).__name__}).") from error
    finally:
        await chunks.aclose()


def _finished(state: ServerState, outcome: Outcome) -> None:
    state.stats.leave()
    if outcome is Outcome.COMPLETE:
        state.stats.successes += 1
    elif outcome is Outcome.CUT:
        state.stats.cut_streams += 1
    elif outcome is Outcome.DISCONNECTED:
        state.stats.client_disconnects += 1


async def _until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _last_chunk_at(chunks: AsyncGenerator[bytes, None], deadline: float) -> AsyncGenerator[bytes, None]:
    """The chunks as they come, but the last one held until ``deadline``: the latency model's floor is then the time
    to the last byte, and the encoder's flush after the last block is hidden inside it instead of added to it."""
    held: bytes | None = None
    try:
        async for chunk in chunks:
            if held is not None:
                yield held
            held = chunk
        await _until(deadline)
        if held is not None:
            yield held
    finally:
        await chunks.aclose()


async def _pieces(body: bytes, size: int = 65536) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(body), size):
        yield body[start:start + size]
