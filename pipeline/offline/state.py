"""The server's configuration and the live state its handlers share (knobs, counters, thread pool)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline.offline.faults import FaultInjector, FaultSettings
from pipeline.offline.stats import Stats

#: the vendor's published per-request limits
DEFAULT_MAX_INPUT_SECONDS = 300.0
DEFAULT_MAX_INPUT_BYTES = 50 * 1024 * 1024
#: 1,000 credits per minute of input audio
DEFAULT_CREDITS_PER_SECOND = 1000.0 / 60.0
#: reported as ``maximum-concurrent-requests`` when no cap is enforced: the Creator plan's cap
DEFAULT_PLAN_CONCURRENCY = 5


@dataclass(frozen=True)
class ServerConfig:
    """Fixed at start. ``api_keys`` empty means any non-empty ``xi-api-key`` is accepted."""

    api_keys: tuple[str, ...] = ()
    max_input_seconds: float = DEFAULT_MAX_INPUT_SECONDS
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    credits_per_second: float = DEFAULT_CREDITS_PER_SECOND
    plan_concurrency: int = DEFAULT_PLAN_CONCURRENCY
    workers: int = 2
    faults: FaultSettings = field(default_factory=FaultSettings)


@dataclass
class ServerState:
    """Everything a request handler needs; one per app."""

    config: ServerConfig
    faults: FaultInjector
    stats: Stats = field(default_factory=Stats)
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerState:
        return cls(config=config, faults=FaultInjector(config.faults))

    def pool(self) -> ThreadPoolExecutor:
        """The conversion thread pool, started on first use."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="sts-convert")
        return self.executor

    def reported_cap(self) -> int:
        return self.faults.settings.max_concurrent or self.config.plan_concurrency
