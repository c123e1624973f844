"""The admin API: loopback clients only (403 ``forbidden`` otherwise), no API key. See docs/offline-server.md.

``GET /_admin/stats``, ``POST /_admin/reset``, ``GET``/``PUT /_admin/faults`` (the fault knobs) and
``GET``/``PUT /_admin/account`` (tier, credits, models, voices). A ``PUT`` takes a JSON object with any of the knobs,
validates the result as a whole (422 with ``loc: ["body", knob, ...]``, nothing changed) and returns the new knobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from pipeline.offline.problems import Invalid, Problem, new_request_id, problem_item
from pipeline.offline.state import ServerState

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

router = APIRouter(prefix="/_admin")


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _loopback_state(request: Request) -> ServerState:
    host = request.client.host if request.client else ""
    if host not in LOOPBACK_HOSTS:
        raise Problem("forbidden", "The admin API only answers loopback clients.")
    return _state(request)


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    return _loopback_state(request).stats.snapshot()


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    """Zero the counters (requests in flight stay counted) and clear the request-rate window."""
    state = _loopback_state(request)
    state.stats.reset()
    state.rate_window.reset()
    return state.stats.snapshot()


@router.get("/faults")
async def faults(request: Request) -> dict[str, Any]:
    return _loopback_state(request).faults.settings.model_dump()


@router.put("/faults")
async def set_faults(request: Request) -> Response:
    state = _loopback_state(request)

    def update(changes: dict[str, Any]) -> BaseModel:
        updated = state.faults.update(changes)
        if "rate_limit_per_minute" in changes:
            state.rate_window.reset()
        return updated

    return await _put(request, update)


@router.get("/account")
async def account(request: Request) -> dict[str, Any]:
    return _loopback_state(request).account.snapshot()


@router.put("/account")
async def set_account(request: Request) -> Response:
    state = _loopback_state(request)

    def update(changes: dict[str, Any]) -> dict[str, Any]:
        state.account.update(changes)
        return state.account.snapshot()

    return await _put(request, update)


async def _put(request: Request, update: Callable[[dict[str, Any]], BaseModel | dict[str, Any]]) -> Response:
    try:
        changes = await request.json()
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        raise Invalid([problem_item(("body",), "Input should be a JSON object of knobs", kind="dict_type",
                                    value=changes)])
    try:
        updated = update(changes)
    except ValidationError as error:
        raise Invalid([problem_item(("body", *map(str, e["loc"])), e["msg"], kind=e["type"], value=e.get("input"))
                       for e in error.errors(include_url=False, include_context=False)]) from error
    return JSONResponse(updated.model_dump() if isinstance(updated, BaseModel) else updated)


def render_problem(request: Request, problem: Problem | Invalid) -> Response:
    """An error raised outside the conversion endpoint, in the same envelope (its own request id)."""
    state = _state(request)
    return problem.response(new_request_id(), omit_request_id_header=state.faults.settings.omit_error_request_id)
