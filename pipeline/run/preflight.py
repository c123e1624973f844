"""The preflight: what the account can refuse, checked against it before anything is spent.

Every distinct ``voice_id`` must exist in the account, every ``model_id`` must be one the account lists as able to do
voice conversion, every ``output_format`` must be allowed on the plan's tier, and the plan's estimated credits must
fit what the subscription has left this period. Each problem names the manifest lines it affects, as FILE:LINE, like
``validate``; the checks cost a handful of GETs and no credits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.api.account import Account, Subscription
from pipeline.formats import FORMAT_MIN_TIER, format_allowed
from pipeline.manifest.load import ManifestEntry, ManifestProblem, Shard

__all__ = ["Preflight", "preflight", "reset_text"]


@dataclass
class Preflight:
    """What the account said: line problems, and whether the estimated credits fit."""

    problems: list[ManifestProblem] = field(default_factory=list)
    #: (shard label, line) of every line a problem names: these would be refused, so they are not run
    refused: set[tuple[str, int]] = field(default_factory=set)
    subscription: Subscription | None = None
    estimated_credits: float = 0.0

    @property
    def credits_left(self) -> int | None:
        return self.subscription.credits_left if self.subscription else None

    @property
    def shortfall(self) -> float:
        """Credits the plan needs beyond what is left (0 when it fits)."""
        left = self.credits_left
        return 0.0 if left is None else max(0.0, self.estimated_credits - left)

    def credit_problem(self) -> str | None:
        if not self.shortfall or self.subscription is None:
            return None
        return (f"the plan needs about {self.estimated_credits:.0f} credits and the account has "
                f"{self.credits_left} left this period ({self.subscription.character_count} of "
                f"{self.subscription.character_limit} spent{reset_text(self.subscription.next_reset_unix)}): "
                "raise the limit, wait for the reset, or submit with --allow-partial to spend what is left")


def reset_text(reset_unix: float | None) -> str:
    if not reset_unix:
        return ""
    return f"; it resets at {datetime.fromtimestamp(reset_unix, UTC):%Y-%m-%d %H:%M} UTC"


def preflight(account: Account, shards: Sequence[Shard], *,
              estimate: Callable[[set[tuple[str, int]]], float] | None = None,
              ceiling: float | None = None) -> Preflight:
    """Check the valid lines of ``shards`` against the account.

    ``estimate`` is given the lines that would be refused and returns the credits the remaining ones need (``plan``
    knows how to estimate; without it no credit check is made). ``ceiling`` is a bound no estimate can exceed (every
    job at its longest allowed input): when the credits left cover it, ``estimate`` is not asked (it probes inputs).
    """
    located = [(shard, entry) for shard in shards for entry in shard.entries]
    result = Preflight(subscription=account.subscription())
    models = account.models()
    voices = account.existing_voices(entry.job.voice_id for _, entry in located)

    def refuse(field_name: str, message: str, where: list[tuple[Shard, ManifestEntry]]) -> None:
        for shard, entry in where:
            result.problems.append(ManifestProblem(shard.label, entry.line, field_name, message))
            result.refused.add((shard.label, entry.line))

    for voice_id, where in _by(located, lambda e: e.job.voice_id).items():
        if voice_id not in voices:
            refuse("voice_id", f"voice {voice_id!r} does not exist in this account (GET /v2/voices): check the id",
                   where)
    for model_id, where in _by(located, lambda e: e.job.model_id).items():
        model = models.get(model_id)
        if model is None:
            refuse("model_id", f"model {model_id!r} is not one of this account's models (GET /v1/models): "
                               f"use one of {', '.join(m for m, i in models.items() if i.can_do_voice_conversion)}",
                   where)
        elif not model.can_do_voice_conversion:
            refuse("model_id", f"model {model_id!r} cannot do voice conversion (GET /v1/models says "
                               "can_do_voice_conversion: false)", where)
    tier = result.subscription.tier if result.subscription else "unknown"
    for output_format, where in _by(located, lambda e: e.job.output_format).items():
        if not format_allowed(output_format, tier):
            refuse("output_format", f"{output_format} needs the {FORMAT_MIN_TIER[output_format]} plan or above; "
                                    f"this account is on {tier}: pick another format or upgrade", where)
    left = result.credits_left
    if estimate is not None and not (ceiling is not None and left is not None and ceiling <= left):
        result.estimated_credits = estimate(result.refused)
    result.problems.sort(key=lambda p: (p.file, p.line, p.field))
    return result


def _by(located: list[tuple[Shard, ManifestEntry]], key: Callable[[ManifestEntry], str]
        ) -> dict[str, list[tuple[Shard, ManifestEntry]]]:
    grouped: dict[str, list[tuple[Shard, ManifestEntry]]] = defaultdict(list)
    for shard, entry in located:
        grouped[key(entry)].append((shard, entry))
    return grouped
