"""The workers' metrics: recorded in prefork children, served summed from the multiprocess directory, labels bounded.

prometheus-client picks its value store at import, so each case runs in a fresh interpreter with its own
``PROMETHEUS_MULTIPROC_DIR`` under tmp.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.ops.metrics import METRIC_NAMES, bounded

_SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    from pipeline.ops.serve import multiprocess_dir
    path = multiprocess_dir(0)
    from dataclasses import dataclass
    from pipeline.ops import metrics

    @dataclass
    class Attempt:
        n: int
        status: int | None
        outcome: str
        duration_s: float
        credits: float

    def child(i: int) -> None:
        metrics.job_started(None)
        metrics.record_attempt(Attempt(1, 429, "rate_limited", 0.2, 0.0), kind="system_busy")
        metrics.record_attempt(Attempt(2, 200, "ok", 42.0, 100.0 + i), audio_s=6.0)
        metrics.record_attempt(Attempt(1, 500, "s3://bucket/secret-key?x", 1.0, 0.0))
        metrics.job_finished("succeeded")
        metrics.job_finished("failed", "job-1234-not-a-reason")

    pids = []
    for i in range(2):
        pid = os.fork()
        if pid == 0:
            child(i)
            os._exit(0)
        pids.append(pid)
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    for pid in pids:
        os.waitpid(pid, 0)
        multiprocess.mark_process_dead(pid)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    sys.stdout.write(generate_latest(registry).decode())
''')


def _scrape(tmp_path: Path) -> dict[str, float]:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    samples = {}
    for line in done.stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_counts_of_every_child_are_summed_and_labels_stay_bounded(tmp_path: Path) -> None:
    samples = _scrape(tmp_path)
    assert samples['sts_api_requests_total{code="ok",status="200"}'] == 2
    assert samples['sts_api_requests_total{code="rate_limited",status="429"}'] == 2
    assert samples['sts_api_requests_total{code="other",status="500"}'] == 2  # not the URI it was given
    assert samples['sts_api_throttled_total{kind="system_busy"}'] == 2
    assert samples["sts_api_retries_total"] == 2
    assert samples["sts_credits_spent_total"] == 201
    assert samples["sts_audio_seconds_converted_total"] == 12
    assert samples['sts_jobs_finished_total{reason="ok",state="succeeded"}'] == 2
    assert samples['sts_jobs_finished_total{reason="other",state="failed"}'] == 2
    assert samples['sts_job_duration_seconds_count{state="succeeded"}'] == 2
    assert 'sts_api_request_duration_seconds_bucket{le="60.0",outcome="ok"}' in samples
    text = "\n".join(samples)
    assert "secret" not in text and "job-1234" not in text and "s3://" not in text


def test_bounded_keeps_our_codes_only() -> None:
    assert bounded("cut_stream") == "cut_stream"
    assert bounded("http_503") == "http_503"
    assert bounded("ok") == "ok"
    for hostile in (None, "", "http_9999", "a" * 500, "job 17", "s3://b/k"):
        assert bounded(hostile) == "other"


def test_records_never_raise_and_every_name_is_documented() -> None:
    from pipeline.ops import metrics

    metrics.record_attempt(object())  # type: ignore[arg-type]  # not an attempt at all: swallowed
    metrics.job_finished("succeeded")
    assert all(name.startswith("sts_") for name in METRIC_NAMES)


def test_the_multiprocess_dir_is_emptied_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.ops.serve import multiprocess_dir

    named = tmp_path / "mp"
    named.mkdir()
    (named / "counter_99.db").write_bytes(b"an earlier worker's child")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(named))
    assert multiprocess_dir(9999) == named and list(named.iterdir()) == []
