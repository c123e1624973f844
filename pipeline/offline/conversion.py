"""The speech-to-speech endpoint: checks in the service's order, then the conversion, streamed or whole.

Order: API key (401) → concurrency cap (429 ``too_many_concurrent_requests``; from here the request is in flight
until its last byte) → voice (404) → query and form (422) → audio size, decoding, duration (422 / 400) → injected
faults (429 ``system_busy``, 500, 503) → 200 with audio, possibly cut. Responses after admission carry the
concurrency headers; a 200 carries ``character-cost`` (credits for the input's duration, rounded up) and, unless
``enable_logging=false``, a ``history-item-id``.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import string
import time
import uuid
from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from pipeline.errors import (
    ApiError,
    AuthError,
    InputError,
    PipelineError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from pipeline.formats import OUTPUT_FORMATS
from pipeline.offline import params as validation
from pipeline.offline.blocks import BLOCK_S
from pipeline.offline.decode import decode_upload
from pipeline.offline.dsp import WORK_RATE_HZ
from pipeline.offline.effects import transform_for
from pipeline.offline.render import RenderJob, expected_output_bytes, render
from pipeline.offline.responses import AudioResponse, Outcome, error_response, error_status
from pipeline.offline.state import ServerState
from pipeline.offline.voices import VOICES

_ID_ALPHABET = string.ascii_letters + string.digits
_INJECTED = {
    500: ("internal_server_error", "An internal error occurred (injected fault). Retry the request."),
    503: ("service_unavailable", "The service is temporarily unavailable (injected fault). Retry later."),
}


def check_api_key(value: str | None, accepted: tuple[str, ...]) -> None:
    """``AuthError`` unless the key is present and (when keys are configured) one of them."""
    if not value or (accepted and value not in accepted):
        raise AuthError("Invalid API key: send a valid key in the xi-api-key header.", status=401,
                        api_status="invalid_api_key")


def credits_for(seconds: float, credits_per_second: float) -> int:
    """What a request is billed: input duration times the rate, rounded up to a whole credit."""
    return math.ceil(round(seconds * credits_per_second, 6))


def _history_item_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


async def _read_audio(form_audio: object, max_bytes: int) -> bytes | None:
    """The uploaded file's bytes (None when absent); 422 for a plain text field or an upload over the limit."""
    if form_audio is None:
        return None
    if not isinstance(form_audio, UploadFile):
        raise RejectedError("audio is not a file", detail=[validation.audio_limit_problem(
            f"Expected UploadFile, received: {type(form_audio)}")])
    if form_audio.size is not None and form_audio.size > max_bytes:
        raise RejectedError("audio too large", detail=[validation.audio_limit_problem(
            f"Audio file is {form_audio.size} bytes; the limit is {max_bytes} bytes "
            f"({max_bytes / 1024 / 1024:g} MB) per request. Split the recording or compress it.")])
    return await form_audio.read()


async def handle(request: Request, voice_id: str, *, streaming: bool) -> Response:
    """Answer one conversion request."""
    state: ServerState = request.app.state.server
    arrival = time.monotonic()
    headers = {"request-id": uuid.uuid4().hex}
    state.stats.arrived(voice_id)
    try:
        check_api_key(request.headers.get("xi-api-key"), state.config.api_keys)
        cap = state.faults.settings.max_concurrent
        if cap is not None and state.stats.in_flight >= cap:
            headers.update({"current-concurrent-requests": str(state.stats.in_flight),
                            "maximum-concurrent-requests": str(cap)})
            raise RateLimitedError(
                f"Too many concurrent requests: {state.stats.in_flight} in flight, the plan allows {cap}. "
                f"Wait for one to finish or lower your concurrency.", kind="too_many_concurrent_requests",
                status=429, retry_after_s=state.faults.settings.retry_after_s)
    except PipelineError as error:
        state.stats.answered(error_status(error))
        return error_response(error, headers)
    current = state.stats.enter()
    headers.update({"current-concurrent-requests": str(current),
                    "maximum-concurrent-requests": str(state.reported_cap())})
    try:
        response = await _admitted(request, state, voice_id, headers, arrival, streaming)
    except PipelineError as error:
        state.stats.leave()
        state.stats.answered(error_status(error))
        return error_response(error, headers)
    except BaseException:
        state.stats.leave()
        raise
    state.stats.answered(200)
    return response


async def _admitted(request: Request, state: ServerState, voice_id: str, headers: dict[str, str], arrival: float,
                    streaming: bool) -> Response:
    voice = VOICES.get(voice_id)
    if voice is None:
        raise ApiError(f"A voice with the voice_id {voice_id} was not found. GET /v1/voices lists the voices.",
                       status=404, api_status="voice_not_found")
    form = await request.form()
    try:
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str) and key != "audio"}
        data = await _read_audio(form.get("audio"), state.config.max_input_bytes)
        parsed = validation.parse_request(request.query_params, fields, has_audio=data is not None)
        assert data is not None  # parse_request rejects a request without audio
        samples = await decode_upload(data, parsed.form.file_format, max_seconds=state.config.max_input_seconds)
    except InputError as error:
        if error.reason == "too_long":
            raise RejectedError(error.message, detail=[validation.audio_limit_problem(error.message)]) from error
        raise ApiError(error.message, status=400, api_status="invalid_audio") from error
    finally:
        await form.close()

    draw = state.faults.draw()
    if draw.status == 429:
        state.stats.faults_injected["429"] += 1
        raise RateLimitedError("The system is experiencing heavy traffic, please try again later (injected fault).",
                               kind="system_busy", status=429, retry_after_s=state.faults.settings.retry_after_s)
    if draw.status in _INJECTED:
        state.stats.faults_injected[str(draw.status)] += 1
        code, message = _INJECTED[draw.status]
        raise TransientError(message, status=draw.status, reason=code)

    audio_s = len(samples) / WORK_RATE_HZ
    credits = credits_for(audio_s, state.config.credits_per_second)
    headers["character-cost"] = str(credits)
    if parsed.query.enable_logging:
        headers["history-item-id"] = _history_item_id()
    output = OUTPUT_FORMATS[parsed.query.output_format]
    transform = transform_for(voice, parsed.settings_overrides)
    latency = parsed.query.optimize_streaming_latency or 0
    job = RenderJob(samples=samples, transform=transform,
                    seed=parsed.form.seed if parsed.form.seed is not None else secrets.randbelow(2**32),
                    output=output, remove_background_noise=parsed.form.remove_background_noise,
                    first_block_s=BLOCK_S / 2**latency)
    min_total_s = state.faults.settings.min_total_s(audio_s)

    async def pace(done_fraction: float) -> None:
        delay = arrival + min_total_s * done_fraction - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def finish(outcome: Outcome) -> None:
        state.stats.leave()
        if outcome is Outcome.COMPLETE:
            state.stats.successes += 1
        elif outcome is Outcome.CUT:
            state.stats.cut_streams += 1
        elif outcome is Outcome.DISCONNECTED:
            state.stats.client_disconnects += 1

    chunks = render(job, state.pool(), pace)
    cut_after = None
    content_length = None
    if not streaming:
        try:
            body = b"".join([chunk async for chunk in chunks])
        finally:
            await chunks.aclose()
        content_length = len(body)
        chunks = _pieces(body)
        if draw.cut_fraction is not None:
            cut_after = int(content_length * draw.cut_fraction)
    elif draw.cut_fraction is not None:
        cut_after = int(expected_output_bytes(len(samples), transform.speed, output) * draw.cut_fraction)
    if cut_after is not None:
        state.stats.faults_injected["cut"] += 1
    state.stats.billed_credits += credits
    return AudioResponse(chunks, media_type=output.content_type, headers=headers, on_finish=finish,
                         cut_after_bytes=cut_after, content_length=content_length)


async def _pieces(body: bytes, size: int = 65536) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(body), size):
        yield body[start:start + size]
