"""Shared fixtures: real services on free loopback ports, started once per session and stopped at the end.

- ``stack``: a LocalStack with redis-server and moto's S3 server.
- ``offline_sts``: the same stack with the offline STS server started too (no faults).
- ``s3``: a boto3 client for the stack's S3 server; ``bucket`` makes a fresh bucket per test.
- ``redis_client``: a redis-py client on a database flushed before each test that asks for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from pipeline.local.services import LOCAL_AWS_ENV, LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(workdir=tmp_path_factory.mktemp("stack")) as local:
        local.start_redis()
        local.start_s3()
        yield local


@pytest.fixture(scope="session")
def offline_sts(stack: LocalStack) -> LocalStack:
    if stack.sts_port is None:
        stack.start_sts()
    return stack


@pytest.fixture(autouse=True)
def _local_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in LOCAL_AWS_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def s3(stack: LocalStack):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=stack.s3_url, region_name="us-east-1",
                        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def redis_client(stack: LocalStack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def spans() -> Iterator[Any]:
    """The tracer's spans, kept in memory for the test (OpenTelemetry is imported only by the tests that ask)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pipeline.ops import tracing

    exporter = InMemorySpanExporter()
    tracing.trace_to(exporter)
    yield exporter
    tracing.stop()
