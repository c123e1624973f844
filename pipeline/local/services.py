"""Local services on free loopback ports, for the demo, the tests, the benchmarks and the chaos drill.

Each service is a real process: ``redis-server``, moto's S3 server, the offline STS server, Celery workers. A
``LocalStack`` starts what it is asked for, hands out the environment a client needs to reach them, and stops
everything it started, also when the caller fails half-way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError

#: credentials the local S3 server accepts; never real ones
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"service on port {port} exited with code {proc.returncode} before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ConfigError(f"nothing listened on 127.0.0.1:{port} after {timeout_s:.0f} s")


@dataclass
class Service:
    """One child process and the file its output goes to."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 60.0) -> Service:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if self.port is not None:
            wait_for_port(self.port, ready_timeout_s, self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (a Celery worker's pool children included)."""
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        self.kill(signal.SIGKILL)  # stragglers left in the group


@dataclass
class LocalStack:
    """Starts local services on free loopback ports and stops them all on ``close``."""

    workdir: Path | None = None  # None: a temporary directory, removed again on ``close``
    api_key: str = "local-demo-key"
    services: list[Service] = field(default_factory=list)
    redis_port: int | None = None
    s3_port: int | None = None
    sts_port: int | None = None

    def __post_init__(self) -> None:
        self._temporary = self.workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sts-stack-")) if self.workdir is None else self.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)

    # --- services
    def start_redis(self, port: int | None = None) -> Service:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ConfigError("redis-server is not installed: run scripts/install-system.sh")
        self.redis_port = port or self.redis_port or free_port()
        argv = [exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--maxmemory-policy", "noeviction", "--dir", str(self.workdir)]
        return self._start("redis", argv, self.redis_port)

    def start_s3(self, port: int | None = None) -> Service:
        self.s3_port = port or self.s3_port or free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)]
        return self._start("s3", argv, self.s3_port)

    def start_sts(self, *extra_args: str, port: int | None = None) -> Service:
        self.sts_port = port or self.sts_port or free_port()
        argv = [sys.executable, "-m", "pipeline.cli", "serve-local", "--host", "127.0.0.1",
                "--port", str(self.sts_port), *extra_args]
        return self._start("sts", argv, self.sts_port)

    def start_worker(self, concurrency: int = 2, name: str | None = None,
                     extra_env: Mapping[str, str] | None = None, pool: str | None = None) -> Service:
        """A worker of ``concurrency`` jobs at once; ``pool`` prefork or threads (None: ``STS_WORKER_POOL``)."""
        index = sum(1 for s in self.services if s.name.startswith("worker"))
        node = name or f"worker{index}"
        argv = [sys.executable, "-m", "pipeline.cli", "worker", "-c", str(concurrency), "--hostname", f"{node}@%h",
                "--loglevel", "INFO", *(["--pool", pool] if pool else [])]
        service = Service(node, argv, {**self.env(), **(extra_env or {})}, self._dir / f"{node}.log")
        self.services.append(service.start())
        return service

    def _start(self, name: str, argv: list[str], port: int) -> Service:
        service = Service(name, argv, self.env(), self._dir / f"{name}.log", port=port)
        self.services.append(service.start())
        return service

    def service(self, name: str) -> Service:
        matches = [s for s in self.services if s.name == name and s.alive()]
        if not matches:
            raise ConfigError(f"no running service named {name!r}")
        return matches[-1]

    # --- what clients need
    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def sts_url(self) -> str:
        return f"http://127.0.0.1:{self.sts_port}"

    def env(self) -> dict[str, str]:
        """The environment of a process that should use these services (the parent's, overridden)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STS_")}
        env.update(LOCAL_AWS_ENV)
        env["PYTHONUNBUFFERED"] = "1"
        env["STS_API_KEY"] = self.api_key
        if self.redis_port:
            env["STS_BROKER_URL"] = self.redis_url
        if self.s3_port:
            env["STS_S3_ENDPOINT_URL"] = self.s3_url
        if self.sts_port:
            env["STS_API_BASE_URL"] = self.sts_url
        return env

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Put this stack's environment into ``os.environ`` for the duration (for in-process clients)."""
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env())
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def _dir(self) -> Path:
        assert self.workdir is not None  # set in __post_init__
        return self.workdir

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._temporary:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
