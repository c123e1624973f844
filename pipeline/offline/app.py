"""FastAPI routes of the offline speech-to-speech server (see docs/offline-server.md).

Public API (the vendor's paths): the conversion endpoints under ``/v1/speech-to-speech`` and ``/v1/voice-changer``,
``GET /v1/voices``, ``GET /v1/voices/{voice_id}``, ``GET /v1/models``; all need an ``xi-api-key``.
Admin API (loopback clients only, no key): ``GET /_admin/stats``, ``POST /_admin/reset``, ``GET``/``PUT
/_admin/faults``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.responses import Response

from pipeline import __version__
from pipeline.errors import ApiError, PipelineError
from pipeline.offline import conversion
from pipeline.offline.models import models_payload
from pipeline.offline.responses import error_response
from pipeline.offline.state import ServerConfig, ServerState
from pipeline.offline.voices import VOICES, voices_payload

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _state(request: Request) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


def _require_loopback(request: Request) -> None:
    host = request.client.host if request.client else ""
    if host not in LOOPBACK_HOSTS:
        raise ApiError("The admin API only answers loopback clients.", status=403, api_status="forbidden")


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app; ``config`` defaults to no faults, the vendor's limits and any non-empty API key."""
    state = ServerState.from_config(config or ServerConfig())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if state.executor is not None:
                state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="sts-pipeline offline speech-to-speech server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.exception_handler(PipelineError)
    async def _pipeline_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, PipelineError)
        return error_response(error)

    for prefix in ("/v1/speech-to-speech", "/v1/voice-changer"):
        app.add_api_route(f"{prefix}/{{voice_id}}/stream", _stream, methods=["POST"])
        app.add_api_route(f"{prefix}/{{voice_id}}", _convert, methods=["POST"])

    @app.get("/v1/voices")
    async def list_voices(request: Request) -> dict[str, Any]:
        conversion.check_api_key(request.headers.get("xi-api-key"), _state(request).config.api_keys)
        return voices_payload()

    @app.get("/v1/voices/{voice_id}")
    async def get_voice(request: Request, voice_id: str) -> dict[str, Any]:
        conversion.check_api_key(request.headers.get("xi-api-key"), _state(request).config.api_keys)
        voice = VOICES.get(voice_id)
        if voice is None:
            raise ApiError(f"A voice with the voice_id {voice_id} was not found.", status=404,
                           api_status="voice_not_found")
        return voice.to_api()

    @app.get("/v1/models")
    async def list_models(request: Request) -> list[dict[str, Any]]:
        conversion.check_api_key(request.headers.get("xi-api-key"), _state(request).config.api_keys)
        return models_payload()

    @app.get("/_admin/stats")
    async def admin_stats(request: Request) -> dict[str, Any]:
        _require_loopback(request)
        return _state(request).stats.snapshot()

    @app.post("/_admin/reset")
    async def admin_reset(request: Request) -> dict[str, Any]:
        _require_loopback(request)
        _state(request).stats.reset()
        return _state(request).stats.snapshot()

    @app.get("/_admin/faults")
    async def admin_faults(request: Request) -> dict[str, Any]:
        _require_loopback(request)
        return _state(request).faults.settings.model_dump()

    @app.put("/_admin/faults")
    async def admin_set_faults(request: Request) -> Response:
        _require_loopback(request)
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        if not isinstance(changes, dict):
            return JSONResponse({"detail": [{"type": "dict_type", "loc": ["body"], "msg": "Input should be a JSON "
                                             "object of fault knobs", "input": changes}]}, status_code=422)
        try:
            updated = _state(request).faults.update(changes)
        except ValidationError as error:
            detail = [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": e.get("input")}
                      for e in error.errors(include_url=False, include_context=False)]
            return JSONResponse({"detail": detail}, status_code=422)
        return JSONResponse(updated.model_dump())

    return app


async def _stream(request: Request, voice_id: str) -> Response:
    return await conversion.handle(request, voice_id, streaming=True)


async def _convert(request: Request, voice_id: str) -> Response:
    return await conversion.handle(request, voice_id, streaming=False)
