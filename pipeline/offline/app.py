"""FastAPI app of the offline speech-to-speech server (see docs/offline-server.md).

Public API (the vendor's paths; all need an ``xi-api-key``): the conversion endpoints under ``/v1/speech-to-speech``
and ``/v1/voice-changer`` (``endpoint``), and the account: ``GET /v1/models``, ``GET /v1/voices``, ``GET /v2/voices``,
``GET /v1/voices/{voice_id}``, ``GET /v1/user`` and ``GET /v1/user/subscription``. Admin API: ``admin``.
Every error is answered in the vendor's current envelope (``problems``), unknown paths and framework errors included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from pipeline import __version__
from pipeline.offline import admin, endpoint, problems, voice_search
from pipeline.offline.problems import Invalid, Problem
from pipeline.offline.state import ServerConfig, ServerState

_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app; ``config`` defaults to no faults, the vendor's limits, a Pro account and any non-empty key."""
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
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(Invalid, _problem)
    app.add_exception_handler(HTTPException, _http_error)
    for prefix in ("/v1/speech-to-speech", "/v1/voice-changer"):
        app.add_api_route(f"{prefix}/{{voice_id}}/stream", _stream, methods=["POST"])
        app.add_api_route(f"{prefix}/{{voice_id}}", _convert, methods=["POST"])
    app.add_api_route("/v1/models", _models, methods=["GET"])
    app.add_api_route("/v1/voices", _voices_v1, methods=["GET"])
    app.add_api_route("/v2/voices", _voices_v2, methods=["GET"])
    app.add_api_route("/v1/voices/{voice_id}", _voice, methods=["GET"])
    app.add_api_route("/v1/user", _user, methods=["GET"])
    app.add_api_route("/v1/user/subscription", _subscription, methods=["GET"])
    app.include_router(admin.router)
    return app


async def _problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, Problem | Invalid)
    return admin.render_problem(request, error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = _HTTP_CODES.get(error.status_code, "invalid_request")
    return admin.render_problem(request, Problem(code, str(error.detail)))


async def _stream(request: Request, voice_id: str) -> Response:
    return await endpoint.handle(request, voice_id, streaming=True)


async def _convert(request: Request, voice_id: str) -> Response:
    return await endpoint.handle(request, voice_id, streaming=False)


def _account_answer(request: Request, path: str, build: Callable[[ServerState], Any]) -> Response:
    """An account endpoint's answer: the key checked, the call counted, ``request-id`` on the 200 too."""
    state: ServerState = request.app.state.server
    state.stats.account_requests[path] += 1
    if not state.key_accepted(request.headers.get("xi-api-key")):
        raise problems.invalid_api_key()
    return JSONResponse(build(state), headers={"request-id": problems.new_request_id()})


async def _models(request: Request) -> Response:
    return _account_answer(request, "/v1/models",
                           lambda state: [model.to_api() for model in state.account.models.values()])


async def _voices_v1(request: Request) -> Response:
    def body(state: ServerState) -> dict[str, Any]:
        voices = [voice.to_api() for voice in state.account.voices.values()]
        return {"voices": voices, "has_more": False, "total_count": len(voices)}

    return _account_answer(request, "/v1/voices", body)


async def _voices_v2(request: Request) -> Response:
    def body(state: ServerState) -> dict[str, Any]:
        return voice_search.search(list(state.account.voices.values()), voice_search.parse_query(request.query_params))

    return _account_answer(request, "/v2/voices", body)


async def _voice(request: Request, voice_id: str) -> Response:
    def body(state: ServerState) -> dict[str, Any]:
        voice = state.account.voices.get(voice_id)
        if voice is None:
            raise problems.voice_not_found(voice_id)
        return voice.to_api()

    return _account_answer(request, "/v1/voices/{voice_id}", body)


async def _user(request: Request) -> Response:
    return _account_answer(request, "/v1/user", lambda state: state.account.user())


async def _subscription(request: Request) -> Response:
    return _account_answer(request, "/v1/user/subscription", lambda state: state.account.subscription())
