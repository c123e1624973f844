"""All settings in one place, read from the environment (prefix ``STS_``) once and passed down.

Units are in the names: ``_s`` seconds, ``_bytes`` bytes. See ``.env.example`` for every variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.errors import ConfigError, register_secret

DEFAULT_API_BASE_URL = "https://api.elevenlabs.io"


class Settings(BaseSettings):
    """Pipeline settings. Every field maps to ``STS_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="STS_", env_file=None, extra="ignore", env_ignore_empty=True)

    # --- the speech-to-speech service
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STS_API_KEY", "ELEVENLABS_API_KEY")
    )
    api_base_url: str = DEFAULT_API_BASE_URL
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0  # longest silence between two chunks of a streamed response
    write_timeout_s: float = 120.0

    # --- queues and storage
    broker_url: str = "redis://127.0.0.1:6379/0"
    limiter_url: str = ""  # Redis for the limiter, run state and budgets; empty = the broker's
    s3_endpoint_url: str = ""  # empty = AWS; credentials come from boto3's usual chain
    s3_region: str = "us-east-1"
    #: s3://bucket/prefix where runs keep their manifests; empty = s3://<first output bucket>/sts-runs
    runs_uri: str = ""
    queue: str = "sts"
    #: accept a Redis whose maxmemory-policy may drop queued jobs (see run/broker.py)
    allow_evicting_broker: bool = False
    #: ask the account before spending (plan, submit, retry): voices, models, the tier's formats, credits left
    preflight: bool = True

    # --- retries
    max_attempts: int = 6  # API attempts per job (or per segment), the first included
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    cooldown_default_s: float = 2.0  # shared pause after a 429 that carries no Retry-After

    # --- the shared limiter
    max_concurrent_requests: int | None = None  # None: learn the plan's cap from the service's headers
    requests_per_minute: int | None = None
    lease_s: float = 60.0
    slot_wait_s: float = 30.0  # longest wait for a slot inside a task before the job goes back to the queue
    requeue_delay_s: float = 10.0

    # --- delivery (see workers/heartbeat.py)
    visibility_timeout_s: float = 60.0
    heartbeat_interval_s: float = 15.0
    restore_interval_s: float = 5.0
    max_deliveries: int = 4
    task_time_limit_s: float = 6 * 3600.0  # prefork only: a thread cannot be interrupted (see README, worker modes)
    #: how a worker holds its ``-c N`` jobs: ``prefork`` (a process each) or ``threads`` (one process, a thread each)
    worker_pool: Literal["prefork", "threads"] = "prefork"
    # --- operations (see pipeline/ops): a worker's /metrics port (None: not served) and its probe file
    metrics_port: int | None = None
    heartbeat_file: str = ""  # touched on every heartbeat; Kubernetes probes read its age (empty: none)
    #: on a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT) running jobs get this long before they are
    #: cancelled and handed back; Kubernetes sets it above the longest request's deadline (deploy/kubernetes)
    soft_shutdown_timeout_s: float = 10.0
    # a job's claim (one delivery converts it at a time) lapses this long after its worker died; None: half the
    # visibility timeout, so a dead worker's claim is gone before its job is delivered again
    claim_ttl_s: float | None = None
    claim_wait_s: float = 15.0  # longest wait of a second delivery for the claim before it goes back to the queue
    #: OpenTelemetry tracing (pipeline/ops/tracing.py, the ``[otel]`` extra): on only when STS_OTEL=1; the standard
    #: OTEL_* variables then say where spans go (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_BSP_*)
    otel: bool = False
    #: the exporters (comma-separated): ``otlp`` (OTLP/HTTP, protobuf) or ``console`` (JSON lines on stdout)
    otel_traces_exporter: str = Field(default="otlp", validation_alias=AliasChoices("OTEL_TRACES_EXPORTER"))

    # --- inputs and outputs
    max_input_bytes: int = 500 * 1024 * 1024
    max_input_seconds: float = 4 * 3600.0
    #: longest any ffmpeg/ffprobe process may run; each gets real time for its audio plus 30 s, capped at this
    ffmpeg_timeout_ceiling_s: float = 3600.0
    allowed_input_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list)  # comma-separated; empty = any
    allowed_output_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: at least 4 s: the planner needs three of its shortest segments and the overlap in one (pipeline.audio.segments)
    max_segment_seconds: float = Field(default=300.0, ge=4.0)
    segment_workers: int = 4  # segments of one long input converted at once (still under the shared cap)

    # --- spend
    credits_per_second: float = 1000.0 / 60.0  # the vendor bills 1,000 credits a minute of input audio
    model_credits_per_second: dict[str, float] = Field(default_factory=dict)  # JSON; per-model override of the above

    @property
    def claim_ttl(self) -> float:
        """How long a job's claim outlives its last renewal (``claim_ttl_s``, else half the visibility timeout)."""
        return self.claim_ttl_s if self.claim_ttl_s else max(2.0, self.visibility_timeout_s / 2)

    def credits_rate(self, model_id: str) -> float:
        """Estimated credits per second of input audio for a model."""
        return self.model_credits_per_second.get(model_id, self.credits_per_second)

    @field_validator("allowed_input_buckets", "allowed_output_buckets", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def limiter_redis_url(self) -> str:
        return self.limiter_url or self.broker_url

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. The API key is registered for redaction. A value that does not parse is a
    ``ConfigError`` naming each variable and what it needs (never the value: it may be a secret)."""
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(f"{_variable(problem['loc'])}: {problem['msg']}" for problem in error.errors())
        raise ConfigError(f"settings from the environment do not parse: {problems}") from None
    register_secret(settings.api_key_value())
    return settings


def _variable(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    return name if name.isupper() else f"STS_{name.upper()}"
