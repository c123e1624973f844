"""Run control: what an operator did to a run after it was submitted (cancel), kept with the run in S3 and in Redis.

Redis is what workers ask (``RunState.cancel``/``cancelled``: one GET before each request); S3 is what lasts, so
``reconcile`` after Redis is gone still tells a cancelled line from a missing one:

    <runs root>/<run_id>/control.json    {"schema": "sts-pipeline/control", "schema_version": 1, "state": ...,
                                          "actions": [{"what": "cancel", "who": "user@host", "at": ISO-8601,
                                                       "why": TEXT, "now": bool}, ...]}

Redis is written first: the moment the cancel is recorded there no job of the run starts a request, and a cancel
whose S3 write then failed can simply be given again (it is idempotent). The S3 copy is updated with If-Match, so two
operators acting at once both end up in ``actions``.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from pipeline.errors import ConditionFailed, PipelineError
from pipeline.run.state import RunState
from pipeline.run.stored import check_run_id, load_run
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage
from pipeline.text import printable

__all__ = ["CONTROL_SCHEMA", "ControlAction", "RunControl", "cancel_run", "control_uri", "load_control",
           "record_action", "who_am_i"]

CONTROL_SCHEMA = "sts-pipeline/control"
#: the longest ``--why`` kept (it is shown in reports and status lines)
MAX_WHY_CHARS = 500
#: If-Match rounds before giving up when others keep writing control.json at the same moment
_WRITE_ROUNDS = 5


@dataclass(frozen=True)
class ControlAction:
    """One operator action on a run: what, who (user@host), when (UTC, ISO-8601), why, and for a cancel ``now``."""

    what: str
    who: str
    at: str
    why: str = ""
    now: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ControlAction:
        data = data if isinstance(data, dict) else {}
        return cls(what=str(data.get("what", "")), who=str(data.get("who", "")), at=str(data.get("at", "")),
                   why=str(data.get("why") or ""), now=bool(data.get("now")))


@dataclass(frozen=True)
class RunControl:
    """Every action taken on a run, oldest first (empty for a run nobody touched)."""

    actions: list[ControlAction] = field(default_factory=list)

    @property
    def cancel(self) -> ControlAction | None:
        """The first cancel (a later one changes nothing), or None."""
        return next((a for a in self.actions if a.what == "cancel"), None)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None

    @property
    def paused(self) -> bool:
        """Whether the last pause or resume was a pause."""
        last = next((a for a in reversed(self.actions) if a.what in ("pause", "resume")), None)
        return last is not None and last.what == "pause"

    @property
    def state(self) -> str | None:
        """What the actions say about the run: ``cancelled``, ``paused``, or None."""
        return "cancelled" if self.cancelled else "paused" if self.paused else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CONTROL_SCHEMA, "schema_version": 1, "state": self.state,
                "actions": [a.to_dict() for a in self.actions]}

    @classmethod
    def from_dict(cls, data: Any) -> RunControl:
        if not isinstance(data, dict) or data.get("schema") != CONTROL_SCHEMA:
            return cls()
        actions = data.get("actions")
        return cls([ControlAction.from_dict(a) for a in actions] if isinstance(actions, list) else [])


def control_uri(root: S3Uri, run_id: str) -> S3Uri:
    return S3Uri(root.bucket, "/".join(p for p in (root.key, check_run_id(run_id), "control.json") if p))


def load_control(storage: Storage, root: S3Uri, run_id: str) -> RunControl:
    """The run's control record from S3 (an empty one when nothing was done to the run)."""
    found = storage.get_json(control_uri(root, run_id))
    return RunControl.from_dict(found[0]) if found else RunControl()


def who_am_i() -> str:
    """``user@host`` of the operator, as control.json records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in this container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _append(storage: Storage, uri: S3Uri, action: ControlAction) -> RunControl:
    """Add ``action`` to control.json with a conditional write (If-None-Match, then If-Match on its ETag)."""
    for _ in range(_WRITE_ROUNDS):
        found = storage.get_json(uri)
        current = RunControl.from_dict(found[0]) if found else RunControl()
        updated = RunControl([*current.actions, action])
        try:
            if found is None:
                storage.put_json(uri, updated.to_dict(), if_none_match=True)
            else:
                storage.put_json(uri, updated.to_dict(), if_match=found[1])
            return updated
        except ConditionFailed:
            continue
    raise PipelineError(f"{uri} kept changing while the action was recorded; give the command again")


def record_action(storage: Storage, root: S3Uri, run_id: str, what: str, *, why: str = "",
                  who: str | None = None) -> ControlAction:
    """Append a pause or resume (or any action but a cancel) to the run's control.json; the run must exist."""
    load_run(storage, root, run_id)
    action = ControlAction(what=what, who=who or who_am_i(), at=datetime.now(UTC).isoformat(),
                           why=printable(why)[:MAX_WHY_CHARS])
    _append(storage, control_uri(root, run_id), action)
    return action


def cancel_run(storage: Storage, client: redis.Redis, root: S3Uri, run_id: str, *, why: str = "",
               now: bool = False, who: str | None = None) -> ControlAction:
    """Cancel a run: Redis first (workers stop starting requests at once), then the run's control.json in S3.

    ``ConfigError`` when the run is not stored under ``root``. Cancelling a cancelled run records nothing new and
    returns the first cancel.
    """
    load_run(storage, root, run_id)  # the run must exist: a typo must not look like a cancel
    existing = load_control(storage, root, run_id).cancel
    action = existing or ControlAction(what="cancel", who=who or who_am_i(),
                                       at=datetime.now(UTC).isoformat(),
                                       why=printable(why)[:MAX_WHY_CHARS], now=now)
    RunState(client, run_id).cancel(json.dumps(action.to_dict()))
    if existing is None:
        _append(storage, control_uri(root, run_id), action)
    return action
