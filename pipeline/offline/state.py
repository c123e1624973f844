"""The server's configuration and the live state its handlers share (knobs, counters, thread pool)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline.formats import CREDITS_PER_SECOND, MAX_INPUT_BYTES, MAX_INPUT_SECONDS
from pipeline.offline.account import Account, AccountSettings
from pipeline.offline.faults import FaultInjector, FaultSettings
from pipeline.offline.ratelimit import RateWindow
from pipeline.offline.stats import Stats

#: the vendor's published per-request limits and billing rate
DEFAULT_MAX_INPUT_SECONDS = MAX_INPUT_SECONDS
DEFAULT_MAX_INPUT_BYTES = MAX_INPUT_BYTES
DEFAULT_CREDITS_PER_SECOND = CREDITS_PER_SECOND


@dataclass(frozen=True)
class ServerConfig:
    """Fixed at start. ``api_keys`` empty means any non-empty ``xi-api-key`` is accepted."""

    api_keys: tuple[str, ...] = ()
    max_input_seconds: float = DEFAULT_MAX_INPUT_SECONDS
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    credits_per_second: float = DEFAULT_CREDITS_PER_SECOND
    plan_concurrency: int | None = None  # reported cap when no cap is enforced; None: the tier's
    workers: int = 2
    #: ``world`` converts the voice; ``light`` is a near-free load generator (``pipeline.offline.light``)
    engine: str = "world"
    faults: FaultSettings = field(default_factory=FaultSettings)
    account: AccountSettings = field(default_factory=AccountSettings)


@dataclass
class ServerState:
    """Everything a request handler needs; one per app."""

    config: ServerConfig
    faults: FaultInjector
    account: Account
    stats: Stats = field(default_factory=Stats)
    rate_window: RateWindow = field(default_factory=RateWindow)
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerState:
        return cls(config=config, faults=FaultInjector(config.faults), account=Account(config.account))

    def pool(self) -> ThreadPoolExecutor:
        """The conversion thread pool, started on first use."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="sts-convert")
        return self.executor

    def reported_cap(self) -> int:
        """``maximum-concurrent-requests``: the enforced cap, else ``--plan-concurrency``, else the plan's cap."""
        return self.faults.settings.max_concurrent or self.config.plan_concurrency or self.account.tier.concurrency

    def key_accepted(self, value: str | None) -> bool:
        """The key is present and (when keys are configured) one of them."""
        return bool(value) and (not self.config.api_keys or value in self.config.api_keys)
