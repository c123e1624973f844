"""The server's audio answer: a 200 body, streamed or whole, possibly cut on purpose (errors: ``problems``).

A cut is real: ``AudioResponse`` stops sending and returns without the final (empty) body message, so uvicorn closes
the connection and a client reading a chunked body (or one with ``Content-Length``) gets an incomplete read
(httpx: ``RemoteProtocolError``). uvicorn logs "ASGI callable returned without completing response." for each cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from enum import StrEnum

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Outcome(StrEnum):
    """How an audio response ended."""

    COMPLETE = "complete"
    CUT = "cut"  # cut on purpose by the fault injector
    DISCONNECTED = "disconnected"  # the client went away
    FAILED = "failed"  # the conversion raised after the headers were sent


class AudioResponse(Response):
    """A 200 whose body comes from ``chunks``; stops early, on purpose, after ``cut_after_bytes`` bytes.

    ``on_finish`` is called exactly once with the ``Outcome``, whatever happens (the caller frees its concurrency
    slot there). With ``content_length`` set the body is sent with that header instead of chunked.
    """

    def __init__(self, chunks: AsyncGenerator[bytes, None], *, media_type: str, headers: Mapping[str, str],
                 on_finish: Callable[[Outcome], None], cut_after_bytes: int | None = None,
                 content_length: int | None = None) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        all_headers = dict(headers)
        if content_length is not None:
            all_headers["content-length"] = str(content_length)
        self.init_headers(all_headers)
        self.cut_after_bytes = cut_after_bytes
        self.on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        outcome = Outcome.FAILED
        try:
            outcome = await self._send_body(send, disconnected)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.chunks.aclose()
            self.on_finish(outcome)

    async def _send_body(self, send: Send, disconnected: asyncio.Event) -> Outcome:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        async for chunk in self.chunks:
            if disconnected.is_set():
                return Outcome.DISCONNECTED
            if self.cut_after_bytes is not None and sent + len(chunk) >= self.cut_after_bytes:
                head = chunk[:self.cut_after_bytes - sent]
                if head:
                    await send({"type": "http.response.body", "body": head, "more_body": True})
                return Outcome.CUT
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
        if self.cut_after_bytes is not None:
            return Outcome.CUT  # everything went out, but the body is still left unterminated
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return Outcome.COMPLETE
