"""``sts-pipeline serve-local``: the offline speech-to-speech server under uvicorn (see docs/offline-server.md)."""

from __future__ import annotations

import click

from pipeline.cli._base import main
from pipeline.offline.state import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_SECONDS, DEFAULT_PLAN_CONCURRENCY

_RATE = click.FloatRange(0.0, 1.0)
_SECONDS = click.FloatRange(min=0.0)


@main.command("serve-local")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8300, show_default=True, type=int, help="Port to listen on.")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Accept only this xi-api-key (repeatable). Default: any non-empty key.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Conversion threads shared by all requests.")
@click.option("--max-input-seconds", default=DEFAULT_MAX_INPUT_SECONDS, show_default=True,
              type=click.FloatRange(min=0.1), help="Longer inputs get 422 (loc body.audio).")
@click.option("--max-input-bytes", default=DEFAULT_MAX_INPUT_BYTES, show_default=True, type=click.IntRange(min=1),
              help="Larger uploads get 422 (loc body.audio).")
@click.option("--credits-per-second", default=None, type=click.FloatRange(min=0.0),
              help="Credits billed per second of input audio (character-cost). Default: the settings' "
                   "credits_per_second (STS_CREDITS_PER_SECOND, 1000/60).")
@click.option("--plan-concurrency", default=DEFAULT_PLAN_CONCURRENCY, show_default=True,
              type=click.IntRange(min=1),
              help="maximum-concurrent-requests reported when --max-concurrent is not set (not enforced).")
@click.option("--max-concurrent", default=None, type=click.IntRange(min=1),
              help="Fault: requests in flight beyond this get 429 too_many_concurrent_requests.")
@click.option("--rate-429", default=0.0, show_default=True, type=_RATE,
              help="Fault: share of requests answered 429 system_busy.")
@click.option("--rate-500", default=0.0, show_default=True, type=_RATE, help="Fault: share answered 500.")
@click.option("--rate-503", default=0.0, show_default=True, type=_RATE, help="Fault: share answered 503.")
@click.option("--rate-cut", default=0.0, show_default=True, type=_RATE,
              help="Fault: share of 200 responses whose body stops early (connection closed).")
@click.option("--latency-fixed", default=0.0, show_default=True, type=_SECONDS,
              help="Fault: every 200 takes at least this many seconds, plus --latency-per-audio-second.")
@click.option("--latency-per-audio-second", default=0.0, show_default=True, type=_SECONDS,
              help="Fault: extra seconds of minimum response time per second of input audio.")
@click.option("--retry-after", default=1, show_default=True, type=click.IntRange(min=0),
              help="Retry-After (seconds) sent with every 429.")
@click.option("--fault-seed", default=None, type=int, help="Seed for reproducible fault draws.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_local(host: str, port: int, api_keys: tuple[str, ...], workers: int, max_input_seconds: float,
                max_input_bytes: int, credits_per_second: float | None, plan_concurrency: int,
                max_concurrent: int | None, rate_429: float, rate_500: float, rate_503: float, rate_cut: float,
                latency_fixed: float, latency_per_audio_second: float, retry_after: int, fault_seed: int | None,
                log_level: str) -> None:
    """Run the offline speech-to-speech server (the vendor's API, converted locally with WORLD)."""
    import uvicorn
    from pydantic import ValidationError

    from pipeline.config import get_settings
    from pipeline.errors import register_secret
    from pipeline.offline import FaultSettings, ServerConfig, create_app

    for key in api_keys:
        register_secret(key)
    try:
        faults = FaultSettings(max_concurrent=max_concurrent, rate_429=rate_429, rate_500=rate_500,
                               rate_503=rate_503, rate_cut=rate_cut, latency_fixed_s=latency_fixed,
                               latency_per_audio_second_s=latency_per_audio_second, retry_after_s=retry_after,
                               fault_seed=fault_seed)
    except ValidationError as error:
        raise click.BadParameter(str(error.errors(include_url=False)[0]["msg"])) from error
    config = ServerConfig(
        api_keys=tuple(api_keys), max_input_seconds=max_input_seconds, max_input_bytes=max_input_bytes,
        credits_per_second=credits_per_second if credits_per_second is not None
        else get_settings().credits_per_second,
        plan_concurrency=plan_concurrency, workers=workers, faults=faults)
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level)
