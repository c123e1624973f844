"""Counters the admin endpoint reports: what the server answered, how busy it was, and what it billed."""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass
class Stats:
    """Conversion-endpoint counters (``account_requests``: calls of the account endpoints, by path). ``in_flight``
    counts admitted requests from arrival to their last byte."""

    requests_total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    account_requests: Counter[str] = field(default_factory=Counter)
    by_voice: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    successes: int = 0
    cut_streams: int = 0
    client_disconnects: int = 0
    billed_credits: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def arrived(self, voice_id: str) -> None:
        self.requests_total += 1
        self.by_voice[voice_id] += 1

    def answered(self, status: int, code: str | None = None) -> None:
        self.by_status[status] += 1
        if code is not None:
            self.by_code[code] += 1

    def enter(self) -> int:
        """Admit one request; returns the number in flight, this one included."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero every counter; requests still in flight stay counted."""
        in_flight = self.in_flight
        for item in fields(self):
            setattr(self, item.name, item.default_factory() if item.default_factory is not MISSING else item.default)
        self.in_flight = self.max_in_flight = in_flight

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "requests_by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "requests_by_code": dict(sorted(self.by_code.items())),
            "requests_by_voice": dict(sorted(self.by_voice.items())),
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "successes": self.successes,
            "cut_streams": self.cut_streams,
            "client_disconnects": self.client_disconnects,
            "billed_credits": self.billed_credits,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "account_requests": dict(sorted(self.account_requests.items())),
        }
