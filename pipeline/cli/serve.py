"""``sts-pipeline serve-local``: the offline speech-to-speech server under uvicorn (see docs/offline-server.md).

Nothing of ``pipeline.offline`` (FastAPI, numpy, pyworld) is imported until the command runs, so other commands start
fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pipeline.cli._base import main
from pipeline.formats import MAX_INPUT_BYTES, MAX_INPUT_SECONDS, TIERS

_RATE = click.FloatRange(0.0, 1.0)
_SECONDS = click.FloatRange(min=0.0)
_COUNT = click.IntRange(min=0)


def _json_list(path: Path | None, key: str) -> list[Any]:
    """A JSON file holding a list (or an object with that list under ``key``)."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"{path}: {error}") from error
    if isinstance(data, dict) and isinstance(data.get(key), list):
        data = data[key]
    if not isinstance(data, list):
        raise click.BadParameter(f"{path}: expected a JSON list of {key} (or {{\"{key}\": [...]}})")
    return data


def _first_problem(error: Any) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in item["loc"])
    return f"{where}: {item['msg']}" if where else str(item["msg"])


@main.command("serve-local")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8300, show_default=True, type=int, help="Port to listen on.")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Accept only this xi-api-key (repeatable). Default: any non-empty key.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Conversion threads shared by all requests.")
@click.option("--engine", type=click.Choice(["world", "light"]), default="world", show_default=True,
              help="world: WORLD voice conversion. light: a fixed gain and polarity flip, a load generator that "
                   "costs almost no CPU (same formats, timing, headers, faults and latency model; not a voice).")
@click.option("--max-input-seconds", default=MAX_INPUT_SECONDS, show_default=True,
              type=click.FloatRange(min=0.1), help="Longer inputs get 400 audio_too_long.")
@click.option("--max-input-bytes", default=MAX_INPUT_BYTES, show_default=True, type=click.IntRange(min=1),
              help="Larger uploads get 400 request_too_large.")
@click.option("--credits-per-second", default=None, type=click.FloatRange(min=0.0),
              help="Credits billed per second of input audio (character-cost). Default: the settings' "
                   "credits_per_second (STS_CREDITS_PER_SECOND, 1000/60).")
@click.option("--tier", type=click.Choice(list(TIERS)), default=None,
              help="The plan to imitate: gated output formats, reported concurrency, default credits. Default: pro.")
@click.option("--credits-limit", type=_COUNT, default=None,
              help="character_limit: a request that would pass it gets 401 quota_exceeded. Default: the plan's "
                   "monthly credits.")
@click.option("--credits-used", type=_COUNT, default=0, show_default=True,
              help="character_count at start; every billed response adds its cost.")
@click.option("--models", "models_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON list of models to add to (or replace among) the built-in ones.")
@click.option("--voices", "voices_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON list of voices to add to (or replace among) the built-in ones.")
@click.option("--generated-voices", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Add this many plain generated voices (to page through GET /v2/voices).")
@click.option("--plan-concurrency", default=None, type=click.IntRange(min=1),
              help="maximum-concurrent-requests reported when --max-concurrent is not set (not enforced). "
                   "Default: the plan's cap.")
@click.option("--max-concurrent", default=None, type=click.IntRange(min=1),
              help="Fault: requests in flight beyond this get 429 concurrent_limit_exceeded.")
@click.option("--rate-limit-per-minute", default=None, type=click.IntRange(min=1),
              help="Fault: requests beyond this many in 60 s get 429 rate_limit_exceeded.")
@click.option("--rate-429", default=0.0, show_default=True, type=_RATE,
              help="Fault: share of requests answered 429 system_busy.")
@click.option("--rate-500", default=0.0, show_default=True, type=_RATE, help="Fault: share answered 500.")
@click.option("--rate-503", default=0.0, show_default=True, type=_RATE, help="Fault: share answered 503 maintenance.")
@click.option("--rate-cut", default=0.0, show_default=True, type=_RATE,
              help="Fault: share of 200 responses whose body stops early (connection closed).")
@click.option("--latency-fixed", default=0.0, show_default=True, type=_SECONDS,
              help="Fault: every 200 takes at least this many seconds, plus --latency-per-audio-second.")
@click.option("--latency-per-audio-second", default=0.0, show_default=True, type=_SECONDS,
              help="Fault: extra seconds of minimum response time per second of input audio.")
@click.option("--retry-after", default=1, show_default=True, type=click.IntRange(min=0),
              help="Retry-After (seconds) sent with the cap's and system_busy's 429s.")
@click.option("--omit-error-request-id", is_flag=True, default=False,
              help="Fault: error responses carry no request-id header (the id stays in detail.request_id).")
@click.option("--fault-seed", default=None, type=int, help="Seed for reproducible fault draws.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_local(host: str, port: int, api_keys: tuple[str, ...], workers: int, engine: str, max_input_seconds: float,
                max_input_bytes: int, credits_per_second: float | None, tier: str | None, credits_limit: int | None,
                credits_used: int, models_file: Path | None, voices_file: Path | None, generated_voices: int,
                plan_concurrency: int | None, max_concurrent: int | None, rate_limit_per_minute: int | None,
                rate_429: float, rate_500: float, rate_503: float, rate_cut: float, latency_fixed: float,
                latency_per_audio_second: float, retry_after: int, omit_error_request_id: bool,
                fault_seed: int | None, log_level: str) -> None:
    """Run the offline speech-to-speech server (the vendor's API, converted locally with WORLD)."""
    import uvicorn
    from pydantic import ValidationError

    from pipeline.config import get_settings
    from pipeline.errors import register_secret
    from pipeline.offline import AccountSettings, FaultSettings, ServerConfig, create_app

    for key in api_keys:
        register_secret(key)
    account: dict[str, Any] = {"credits_limit": credits_limit, "credits_used": credits_used,
                               "models": _json_list(models_file, "models"), "voices": _json_list(voices_file, "voices"),
                               "generated_voices": generated_voices}
    if tier is not None:
        account["tier"] = tier
    try:
        faults = FaultSettings(max_concurrent=max_concurrent, rate_limit_per_minute=rate_limit_per_minute,
                               rate_429=rate_429, rate_500=rate_500, rate_503=rate_503, rate_cut=rate_cut,
                               latency_fixed_s=latency_fixed, latency_per_audio_second_s=latency_per_audio_second,
                               retry_after_s=retry_after, omit_error_request_id=omit_error_request_id,
                               fault_seed=fault_seed)
        account_settings = AccountSettings.model_validate(account)
    except ValidationError as error:
        raise click.BadParameter(_first_problem(error)) from error
    config = ServerConfig(
        api_keys=tuple(api_keys), max_input_seconds=max_input_seconds, max_input_bytes=max_input_bytes,
        credits_per_second=credits_per_second if credits_per_second is not None
        else get_settings().credits_per_second,
        plan_concurrency=plan_concurrency, workers=workers, engine=engine, faults=faults, account=account_settings)
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level)
