"""Run notifications: signed JSON events POSTed to the run's webhook, never slowing or failing a job.

Events: ``run.started`` (submit), ``run.progress`` (at most every ``notify_interval_s``, from the worker whose job
ends first after the interval: one ``SET NX EX`` decides), ``run.paused``/``run.resumed``/``run.cancelled`` (the
commands), and ``run.finished`` (exactly once: sent by the one worker ``pipeline.run.finish`` lets finish the run).

Each body is signed: ``X-STS-Signature: sha256=<hex HMAC-SHA256 of the body with STS_NOTIFY_SECRET>`` (no header
without a secret), ``X-STS-Event`` names the event. Posts go through one background thread per process with a
bounded queue: a receiver that is down or slow costs a job nothing; each event is tried ``ATTEMPTS`` times with
backoff, then dropped with one log line. Every string in an event is redacted and made printable; events carry counts,
credits, seconds, ids and the report's S3 location, never a key, a secret or a presigned URL (the webhook URL itself
is not in any event either).

Redis keys (the run's live meta hash, ``RunState``; expire with it):

    sts:run:{run_id}:meta              hash   notify_url, notify_interval_s (set by submit before any job is queued)
    sts:run:{run_id}:notify_progress   string set NX with the interval as its TTL: whoever sets it sends a progress
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from pipeline._redis import text
from pipeline.errors import redact
from pipeline.text import printable

log = logging.getLogger(__name__)

__all__ = ["SIGNATURE_HEADER", "Notifier", "configure", "event_body", "notifier", "progress_due", "run_counts",
           "run_notifier", "sign", "tell"]

SIGNATURE_HEADER = "X-STS-Signature"
ATTEMPTS = 3
TIMEOUT_S = 5.0
#: events waiting to be posted per process; beyond it new events are dropped (a receiver that long down is gone)
MAX_PENDING = 1000
DEFAULT_INTERVAL_S = 60.0


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return printable(redact(value))
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def event_body(event: str, run_id: str, data: dict[str, Any]) -> bytes:
    """The JSON body of one event: every string redacted and printable."""
    return json.dumps(_clean({"event": event, "run_id": run_id, "at": datetime.now(UTC).isoformat(), **data}),
                      sort_keys=True).encode()


class Notifier:
    """Posts events to one URL from a background thread; ``send`` never blocks and never raises."""

    def __init__(self, url: str, secret: str | None = None) -> None:
        self.url = url
        self._secret = secret
        self._pending: queue.Queue[tuple[str, bytes] | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="sts-notify", daemon=True)
        self._thread.start()

    def send(self, event: str, run_id: str, data: dict[str, Any]) -> None:
        try:
            self._pending.put_nowait((event, event_body(event, run_id, data)))
        except queue.Full:
            log.warning("notification %s of run %s dropped: %d events wait for the receiver", event, run_id,
                        MAX_PENDING)

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) for the pending events: a command calls it before it exits."""
        try:
            self._pending.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            while (item := self._pending.get()) is not None:
                self._post(client, *item)

    def _post(self, client: httpx.Client, event: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "X-STS-Event": event}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        problem = ""
        for attempt in range(ATTEMPTS):
            try:
                response = client.post(self.url, content=body, headers=headers)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                problem = type(error).__name__
            time.sleep(0.5 * 2 ** attempt)
        log.warning("notification %s not delivered after %d attempts (%s)", event, ATTEMPTS, problem)


_notifiers: dict[tuple[int, str], Notifier] = {}
_notifiers_lock = threading.Lock()  # a threads worker's jobs ask at once: still one notifier (and thread) per URL


def notifier(url: str) -> Notifier:
    """This process's notifier for ``url`` (one thread per process and URL, made after fork)."""
    key = (os.getpid(), url)
    with _notifiers_lock:
        if key not in _notifiers:
            _notifiers[key] = Notifier(url, os.environ.get("STS_NOTIFY_SECRET") or None)
        return _notifiers[key]


def configure(client: Any, run_id: str, url: str, interval_s: float) -> None:
    """Remember the run's webhook in its live meta (before any job is queued, so even the first job knows)."""
    client.hset(f"sts:run:{run_id}:meta", mapping={"notify_url": url, "notify_interval_s": str(interval_s)})


def run_notifier(client: Any, run_id: str) -> tuple[Notifier, float] | None:
    """The run's notifier and progress interval, or None when the run has no webhook."""
    url, interval = client.hmget(f"sts:run:{run_id}:meta", ["notify_url", "notify_interval_s"])
    if not url:
        return None
    return notifier(text(url)), float(text(interval)) if interval else DEFAULT_INTERVAL_S


def progress_due(client: Any, run_id: str, interval_s: float) -> bool:
    """True for the one caller per interval that should send ``run.progress``."""
    return bool(client.set(f"sts:run:{run_id}:notify_progress", "1", nx=True, ex=max(1, int(interval_s))))


def run_counts(client: Any, run_id: str) -> dict[str, Any]:
    """What a progress or finished event carries: counts by state and credits spent so far (live state)."""
    from pipeline.run.budget import Budget
    from pipeline.run.state import RunState

    counts = dict(RunState(client, run_id).counts())
    return {"counts": counts, "jobs": sum(counts.values()), "credits": round(Budget(client, run_id).spent(), 6)}


def tell(client: Any, run_id: str, event: str, data: dict[str, Any] | None = None, *, wait: bool = False) -> None:
    """Send ``event`` if the run has a webhook (``wait``: a command, which waits for delivery before it exits)."""
    hook = run_notifier(client, run_id)
    if hook is None:
        return
    hook[0].send(event, run_id, {**run_counts(client, run_id), **(data or {})})
    if wait:
        hook[0].close()
        _notifiers.pop((os.getpid(), hook[0].url), None)
