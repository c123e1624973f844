"""The preflight as the commands show it: ``validate --remote``, ``plan``, ``submit`` and ``retry`` all run it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import redis
from rich.console import Console

from pipeline.api.account import Account
from pipeline.api.limiter import key_id_for
from pipeline.config import Settings
from pipeline.errors import PipelineError, TransientError
from pipeline.manifest.load import Shard
from pipeline.run.plan import Plan, make_plan
from pipeline.run.preflight import Preflight, preflight
from pipeline.run.quota import QuotaGate
from pipeline.storage.s3 import Storage


def check_account(settings: Settings, shards: Sequence[Shard], plan: Plan | Callable[[], Plan], *,
                  console: Console) -> Preflight | None:
    """Run the preflight and print its problems as FILE:LINE; None (after one warning line) when the account's
    endpoints did not answer, so an offline ``plan`` or ``submit`` still works. Opens the quota gate when the
    subscription shows credits left (a raised limit or a reset).

    ``plan`` may be a function that makes it: it is then called only when the credits left do not already cover
    every job at its longest allowed input (making a plan probes every input).
    """
    if not settings.api_key_value():
        console.print("no STS_API_KEY on this machine: the account was not checked before spending", soft_wrap=True,
                      markup=False, highlight=False)
        return None
    label_of = {shard.name: shard.label for shard in shards}

    def estimate(refused: set[tuple[str, int]]) -> float:
        made = plan() if callable(plan) else plan
        return sum(credits for shard_plan in made.shards for line, credits in shard_plan.credits_by_line.items()
                   if (label_of[shard_plan.name], line) not in refused)

    jobs = [entry for shard in shards for entry in shard.entries]
    ceiling = sum(settings.max_input_seconds * settings.credits_rate(entry.job.model_id) for entry in jobs)
    try:
        with Account.from_settings(settings) as account:
            result = preflight(account, shards, estimate=estimate, ceiling=ceiling)
    except TransientError as error:
        console.print(f"could not check the account before spending ({error.message}); going on without it",
                      soft_wrap=True, markup=False, highlight=False)
        return None
    for problem in result.problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if (shortfall := result.credit_problem()) is not None:
        console.print(shortfall, markup=False, highlight=False, soft_wrap=True)
    if result.credits_left:
        _open_quota(settings)
    return result


def _open_quota(settings: Settings) -> None:
    try:
        client = redis.Redis.from_url(settings.limiter_redis_url, socket_connect_timeout=2)
        QuotaGate(client, key_id_for(settings.api_key_value() or "")).open()
    except (redis.RedisError, PipelineError):
        pass  # nothing to open without Redis: workers cannot have closed it either


def gate_run(settings: Settings, storage: Storage, shards: list[Shard], *, console: Console, skip_invalid: bool,
               allow_partial: bool, budget: float | None) -> tuple[list[Shard], float | None, list[dict[str, Any]]]:
    """Check the run against the account; return the shards without the lines it would refuse, the budget, and
    those lines (stored with the run, so ``reconcile`` reports them as invalid). Exits 1 when it refuses the run."""
    if not settings.preflight:
        return shards, budget, []
    account = check_account(settings, shards, lambda: make_plan(storage, shards, settings, concurrency=1),
                            console=console)
    if account is None:
        return shards, budget, []
    if account.problems and not skip_invalid:
        console.print(f"{len(account.problems)} line(s) the account would refuse: nothing was enqueued (fix them, "
                      "or use --skip-invalid)", markup=False, highlight=False)
        sys.exit(1)
    if account.shortfall:
        if not allow_partial:
            console.print("nothing was enqueued", markup=False, highlight=False)
            sys.exit(1)
        left = float(account.credits_left or 0)
        budget = left if budget is None else min(budget, left)
        console.print(f"--allow-partial: the run's budget is the {left:.0f} credits left; the rest ends deferred",
                      markup=False, highlight=False)
    refused = [{"shard": shard.name, "line": p.line, "field": p.field, "message": p.message}
               for shard in shards for p in account.problems if p.file == shard.label]
    kept = [replace(shard, entries=[e for e in shard.entries if (shard.label, e.line) not in account.refused])
            for shard in shards]
    if not any(shard.entries for shard in kept):
        console.print("no job is left to enqueue", markup=False, highlight=False)
        sys.exit(1)
    return kept, budget, refused
