"""``make chaos``: a nightly run that meets everything at once, on real local services, in one bounded drill.

What runs: redis-server, moto's S3 server behind ``bench/tcp_proxy.py``, the offline STS server with 30% injected
429/500/503/cut streams and a concurrency cap, two Celery workers (then a replacement), and the pipeline's own CLI
(``submit``, ``reconcile``, ``retry``), all on free loopback ports. What happens to them while the manifest runs:

1. a worker is SIGKILLed while requests are streaming; a replacement starts;
2. the S3 endpoint goes away (the proxy is SIGKILLed: the port refuses, open connections reset) and comes back on the
   same port with its data (moto keeps objects in memory, so it is the proxy, not moto, that restarts);
3. Redis stops and starts again empty on the same port; the workers must reconnect; whatever was queued is lost;
4. ``reconcile`` (S3 only) and ``retry`` run until nothing retryable is left (bounded rounds).

Then one table: every manifest line's terminal state, duplicates (keys with more than one version on the versioned
output bucket), lost lines, what the offline server saw, spent successes against jobs, secret hits. The exit code is 1
when a promise broke: a line lost, an output or provenance written twice, the cap exceeded, more successes spent
than jobs plus the ones a fault interrupted, a secret found anywhere, a worker that did not reconnect, or time ran out.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import redis

from bench import chaos_audit as audit
from bench.chaos_report import print_table
from pipeline.local.samples import speech_like
from pipeline.local.secret_scan import SecretScanner
from pipeline.local.services import LocalStack, Service, free_port

#: the whole drill, setup to table; a SIGALRM a little later stops it wherever it is (services are still stopped)
HARD_STOP_S = 480
CAP = 4
GOOD_JOBS = 200
REJECTED_JOBS = 4  # inputs longer than the server's --max-input-seconds: 400 audio_too_long, tried once
MISSING_JOBS = 3  # the input object does not exist
NOT_AUDIO_JOBS = 2  # the input is text
DISTINCT_CLIPS = 24  # the good inputs' bytes come from this many recordings of 1-3 s
LONG_CLIP_S = 4.5
SERVER_MAX_INPUT_S = 4.0
S3_DOWN_S = 10.0
REDIS_DOWN_S = 5.0
MAX_RETRY_ROUNDS = 4
VOICES = ("BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9", "vK7n2rg6OeynABb4ilbv", "xmXfcXc3zRgo3GlCx0pq")
IN_BUCKET, OUT_BUCKET = "chaos-in", "chaos-out"
WORKDIR = Path("bench/out/chaos")

#: 30% of requests misbehave: 20% answered 429/500/503, and 12.5% of the remaining 80% cut mid-stream
SERVER_ARGS = ("--max-concurrent", str(CAP), "--rate-429", "0.08", "--rate-500", "0.07", "--rate-503", "0.05",
               "--rate-cut", "0.125", "--retry-after", "1", "--latency-fixed", "0.4", "--fault-seed", "20",
               "--max-input-seconds", str(SERVER_MAX_INPUT_S), "--workers", "2")
#: the delivery tests' fast recovery (VT 8 s, heartbeat 2 s) and the resilience tests' fast retries
WORKER_ENV = {"STS_MAX_CONCURRENT_REQUESTS": str(CAP), "STS_VISIBILITY_TIMEOUT_S": "8",
              "STS_HEARTBEAT_INTERVAL_S": "2", "STS_RESTORE_INTERVAL_S": "1", "STS_LEASE_S": "6",
              "STS_BACKOFF_BASE_S": "0.2", "STS_BACKOFF_MAX_S": "2", "STS_MAX_ATTEMPTS": "12",
              "STS_COOLDOWN_DEFAULT_S": "0.5", "STS_SLOT_WAIT_S": "30", "STS_REQUEUE_DELAY_S": "2"}
WORKER_CONCURRENCY = 3
#: failure classes that retrying cannot help; every other failure is retryable
PERMANENT_CLASSES = frozenset({"InputError", "ApiError", "AuthError"})


class HardStop(Exception):
    """The drill ran past HARD_STOP_S."""


@dataclass
class Clock:
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self, margin_s: float = 0.0) -> float:
        return max(0.0, HARD_STOP_S - margin_s - self.elapsed())


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


class Drill:
    """The services, the manifest and the faults; ``figures`` collects what the table shows."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.clock = Clock()
        self.api_key = f"sk_chaos_{secrets.token_hex(16)}"
        self.aws_secret = f"chaos/aws+secret/{secrets.token_hex(16)}"
        self.stack = LocalStack(workdir=workdir / "services", api_key=self.api_key)
        self.workers: list[Service] = []
        self.proxy: Service | None = None
        self.moto_port = 0
        self.figures: dict[str, Any] = {"timeline": []}
        self.cli_runs = 0
        self.redis_hits_before_wipe: list[str] = []
        self.redis_keys_before_wipe = 0
        self.log_offsets_at_reconnect: dict[str, int] = {}
        self.scanner = SecretScanner({"API key": self.api_key, "AWS secret": self.aws_secret})
        self._s3: Any = None
        self._redis: redis.Redis | None = None
        self.submit_proc: subprocess.Popen[bytes] | None = None
        self.submit_exited_at: float | None = None
        self.redis_back_at = 0.0

    # --- services
    def env(self) -> dict[str, str]:
        return {**self.stack.env(), "AWS_SECRET_ACCESS_KEY": self.aws_secret, **WORKER_ENV}

    def start_services(self) -> None:
        self.stack.start_redis()
        self.moto_port = free_port()
        self.stack.start_s3(port=self.moto_port)
        self.stack.s3_port = free_port()  # clients reach S3 only through the proxy
        self.start_proxy()
        self.stack.start_sts(*SERVER_ARGS)

    def start_proxy(self) -> None:
        assert self.stack.s3_port is not None
        argv = [sys.executable, "-m", "bench.tcp_proxy", "--listen", str(self.stack.s3_port),
                "--target", str(self.moto_port)]
        self.proxy = Service("s3-proxy", argv, self.env(), self.workdir / "services" / "s3-proxy.log",
                             port=self.stack.s3_port).start()
        self.stack.services.append(self.proxy)

    def start_worker(self) -> Service:
        name = f"w{len(self.workers)}"
        argv = [sys.executable, "-m", "pipeline.cli", "worker", "-c", str(WORKER_CONCURRENCY),
                "--hostname", f"{name}@%h", "--loglevel", "INFO"]
        worker = Service(name, argv, self.env(), self.workdir / "services" / f"{name}.log").start()
        self.workers.append(worker)
        self.stack.services.append(worker)
        return worker

    def s3(self) -> Any:
        """The drill's own S3 client (through the proxy, like everyone's); it reconnects after the outage."""
        if self._s3 is None:
            self._s3 = boto3.client("s3", endpoint_url=self.stack.s3_url, region_name="us-east-1",
                                    aws_access_key_id=self.env()["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=self.aws_secret)
        return self._s3

    def redis(self) -> redis.Redis:
        """The drill's own Redis client; it reconnects after the restart."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.stack.redis_url, socket_timeout=5, socket_connect_timeout=2)
        return self._redis

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.stack.sts_url}/_admin/stats", timeout=5).json())

    def _disconnects_over(self, count: int) -> bool:
        return int(self.stats()["client_disconnects"]) > count

    def cli(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run the pipeline's CLI as a user would; its output is kept as a log file (the secret scan reads it)."""
        self.cli_runs += 1
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=self.env(), capture_output=True,
                                text=True, timeout=max(5.0, timeout_s))
        log = self.workdir / "services" / f"cli-{self.cli_runs:02d}-{args[0]}.log"
        log.write_text(f"$ sts-pipeline {' '.join(args)}\nexit {result.returncode}\n--- stdout\n{result.stdout}"
                       f"\n--- stderr\n{result.stderr}")
        return result

    def note(self, what: str) -> None:
        self.figures["timeline"].append(f"{self.clock.elapsed():6.1f} s  {what}")
        print(f"[chaos {self.clock.elapsed():6.1f} s] {what}", flush=True)

    # --- inputs and manifest
    def upload_inputs(self) -> Path:
        s3 = self.s3()
        s3.create_bucket(Bucket=IN_BUCKET)
        s3.create_bucket(Bucket=OUT_BUCKET)
        s3.put_bucket_versioning(Bucket=OUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        clips = [_wav_bytes(1.0 + 2.0 * n / (DISTINCT_CLIPS - 1), seed=n) for n in range(DISTINCT_CLIPS)]
        uploads = {f"clips/{n:03d}.wav": clips[n % DISTINCT_CLIPS] for n in range(GOOD_JOBS)}
        uploads |= {f"long/{k}.wav": _wav_bytes(LONG_CLIP_S, seed=100 + k) for k in range(REJECTED_JOBS)}
        uploads |= {f"text/{k}.wav": b"these are meeting notes, not a recording\n" for k in range(NOT_AUDIO_JOBS)}
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda item: s3.put_object(Bucket=IN_BUCKET, Key=item[0], Body=item[1]), uploads.items()))
        return self.write_manifest()

    def write_manifest(self) -> Path:
        def job(n: int, source: str, output: str) -> str:
            return json.dumps({"input": f"s3://{IN_BUCKET}/{source}", "voice_id": VOICES[n % len(VOICES)],
                               "output_format": "pcm_16000", "seed": n, "output": f"s3://{OUT_BUCKET}/{output}",
                               "metadata": {"drill": "chaos", "n": n}})

        good = [job(n, f"clips/{n:03d}.wav", f"out/{n:03d}.pcm") for n in range(GOOD_JOBS)]
        bad = [job(900 + k, f"long/{k}.wav", f"out/long-{k}.pcm") for k in range(REJECTED_JOBS)]
        bad += [job(910 + k, f"missing/{k}.wav", f"out/missing-{k}.pcm") for k in range(MISSING_JOBS)]
        bad += [job(920 + k, f"text/{k}.wav", f"out/text-{k}.pcm") for k in range(NOT_AUDIO_JOBS)]
        invalid = [  # a typo and hostile keys: refused by validation, never enqueued
            json.dumps({"inptu": f"s3://{IN_BUCKET}/clips/000.wav", "voice_id": VOICES[0],
                        "output": f"s3://{OUT_BUCKET}/out/typo.pcm"}),
            json.dumps({"input": f"s3://{IN_BUCKET}/clips/001.wav", "voice_id": VOICES[0],
                        "output": f"s3://{OUT_BUCKET}/out/../../{IN_BUCKET}/clips/001.wav"}),
            json.dumps({"input": f"s3://{IN_BUCKET}/clips/002.wav", "voice_id": VOICES[0],
                        "output": f"s3://{OUT_BUCKET}/out/evil\u0007\r\n.pcm"}),
            json.dumps({"input": f"s3://{IN_BUCKET}/clips/003.wav", "voice_id": "'; DROP TABLE voices; --",
                        "output": f"s3://{OUT_BUCKET}/out/sql.pcm"}),
        ]
        lines = list(good)
        extra = bad + invalid
        step = len(good) // (len(extra) + 1)
        for k, line in enumerate(extra):  # spread the bad lines through the good ones
            lines.insert((k + 1) * step + k, line)
        path = self.workdir / "chaos.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        self.figures["manifest"] = {"lines": len(lines), "good": GOOD_JOBS, "rejected_planted": REJECTED_JOBS,
                                    "missing_planted": MISSING_JOBS, "not_audio_planted": NOT_AUDIO_JOBS,
                                    "invalid_planted": len(invalid)}
        return path

    # --- the faults
    def successes(self) -> int:
        return int(self.stats()["successes"])

    def kill_a_worker_mid_stream(self, after_successes: int, max_kills: int = 3) -> None:
        """SIGKILL the worker with the most connections to the server open while requests are in flight; a
        replacement starts at once. Tried again (bounded) if no stream was cut, i.e. the victim was between calls."""
        wait_until(lambda: self.successes() >= after_successes, self.clock.left(200))
        kills: list[dict[str, Any]] = []
        for _ in range(max_kills):
            wait_until(lambda: self.stats()["in_flight"] >= CAP - 1, 30, poll_s=0.1)
            assert self.stack.sts_port is not None
            live = [w for w in self.workers if w.alive()]
            victim = max(live, key=lambda w: audit.connections_to(self.stack.sts_port or 0, w.pid))
            before = self.stats()
            victim.kill()
            victim.proc.wait(timeout=10)  # type: ignore[union-attr]
            held = min(WORKER_CONCURRENCY, audit.unfinished_tasks(victim.log_path.read_text(errors="replace")))
            replacement = self.start_worker()
            wait_until(partial(self._disconnects_over, before["client_disconnects"]), 10, poll_s=0.2)
            cut = self.stats()["client_disconnects"] - before["client_disconnects"]
            kills.append({"worker": victim.name, "held_tasks": held, "in_flight_at_server": before["in_flight"],
                          "streams_cut": cut, "replacement": replacement.name})
            self.note(f"SIGKILL {victim.name} (held {held} task(s), {before['in_flight']} request(s) in flight at "
                      f"the server, {cut} stream(s) cut); replacement {replacement.name} started")
            if cut:
                break
        self.figures["kill"] = {"kills": kills, "held_tasks": sum(k["held_tasks"] for k in kills),
                                "streams_cut": sum(k["streams_cut"] for k in kills)}

    def running_tasks(self) -> int:
        """Jobs the live workers run right now: the most a fault at this instant can interrupt. Held deliveries
        beyond a worker's pool size wait for a countdown (a re-queue's ETA) and have not started."""
        return sum(min(WORKER_CONCURRENCY, audit.unfinished_tasks(w.log_path.read_text(errors="replace")))
                   for w in self.workers if w.alive())

    def s3_outage(self, after_successes: int) -> None:
        wait_until(lambda: self.successes() >= after_successes, self.clock.left(200))
        assert self.proxy is not None
        objects_before = _count_objects(self.s3())
        running = self.running_tasks()
        self.proxy.kill()
        self.proxy.proc.wait(timeout=10)  # type: ignore[union-attr]
        self.note(f"S3 endpoint down (proxy SIGKILLed, port {self.stack.s3_port} refuses)")
        time.sleep(S3_DOWN_S)
        self.start_proxy()
        objects_after_restart = _count_objects(self.s3())
        self.figures["s3"] = {"down_s": S3_DOWN_S, "running_tasks": running, "objects_before": objects_before,
                              "objects_after": objects_after_restart,
                              "data_kept": objects_after_restart >= objects_before}
        self.note(f"S3 endpoint back on the same port: {objects_before} objects before, {objects_after_restart} "
                  "after")

    def redis_restart(self, after_successes: int) -> None:
        wait_until(lambda: self.successes() >= after_successes, self.clock.left(200))
        live = [w for w in self.workers if w.alive()]
        connected_before = {w.name: audit.broker_connections(w.log_path.read_text(errors="replace")) for w in live}
        queued_before = int(self.redis().llen(self.env().get("STS_QUEUE", "sts")))
        running = self.running_tasks()
        # what Redis held mid-run is wiped below: scan it for secrets now, the final scan sees only the new Redis
        self.redis_hits_before_wipe = [str(hit) for hit in self.scanner.scan_redis(self.redis())]
        self.redis_keys_before_wipe = int(self.redis().dbsize())
        self.stack.service("redis").stop()
        self.note(f"Redis stopped ({queued_before} message(s) were queued)")
        time.sleep(REDIS_DOWN_S)
        self.stack.start_redis(port=self.stack.redis_port)
        self.redis_back_at = time.monotonic()
        empty = self.redis().dbsize() == 0

        def reconnected() -> bool:
            return all(audit.broker_connections(w.log_path.read_text(errors="replace")) > connected_before[w.name]
                       for w in live)

        wait_until(reconnected, min(60.0, self.clock.left(150)))
        again = [w.name for w in live
                 if audit.broker_connections(w.log_path.read_text(errors="replace")) > connected_before[w.name]]
        self.log_offsets_at_reconnect = {w.name: len(w.log_path.read_text(errors="replace")) for w in live}
        self.figures["redis"] = {"down_s": REDIS_DOWN_S, "running_tasks": running, "queued_lost": queued_before,
                                 "restarted_empty": empty, "workers": len(live), "reconnected": len(again)}
        self.note(f"Redis back empty on port {self.stack.redis_port}; {len(again)}/{len(live)} workers reconnected")

    def submit_and_wait(self, manifest: Path) -> subprocess.Popen[bytes]:
        """``submit --wait`` as a nightly cron job runs it: in the background, through every fault below."""
        log = open(self.workdir / "services" / "cli-00-submit-wait.log", "wb")
        submit = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "submit", str(manifest), "--skip-invalid",
                                   "--run-id", "chaos-drill", "--wait", "--timeout", str(int(self.clock.left(60)))],
                                  env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.submit_proc = submit
        threading.Thread(target=self._note_exit, args=(submit,), daemon=True).start()
        client = self.redis()
        if not wait_until(lambda: client.exists("sts:run:chaos-drill:meta") == 1 and client.llen("sts") > 0, 120,
                          poll_s=0.2):
            raise RuntimeError("submit enqueued nothing within 120 s: see cli-00-submit-wait.log")
        self.note("submitted (submit --wait runs in the background)")
        return submit

    def _note_exit(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self.submit_exited_at = time.monotonic()

    def watch_submit(self, submit: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        """The waiting ``submit`` lost its run's state with Redis: it should end by itself, in one clear line."""
        try:
            code: int | None = submit.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait(timeout=10)
        ended_after_s = (self.submit_exited_at or time.monotonic()) - self.redis_back_at
        text = (self.workdir / "services" / "cli-00-submit-wait.log").read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if line.startswith("Error:")), lines[-1] if lines else "")
        self.figures["submit_wait"] = {"exit": code, "ended_after_s": round(ended_after_s, 1),
                                       "traceback": "Traceback (most recent call last)" in text,
                                       "last_line": said[:400]}
        self.note(f"submit --wait: {'still waiting, killed' if code is None else f'exit {code}'}; {said[:120]}")

    def wait_for_drain(self, timeout_s: float, quiet_s: float = 6.0) -> bool:
        """Until nothing is queued, held or in flight for ``quiet_s`` in a row."""
        queue = self.env().get("STS_QUEUE", "sts")
        quiet_since: list[float | None] = [None]

        def idle() -> bool:
            try:
                client = self.redis()
                busy = client.llen(queue) or client.hlen("unacked") or self.stats()["in_flight"]
            except (redis.RedisError, httpx.HTTPError):
                busy = 1
            if busy:
                quiet_since[0] = None
                return False
            quiet_since[0] = quiet_since[0] or time.monotonic()
            return time.monotonic() - quiet_since[0] >= quiet_s

        return wait_until(idle, timeout_s, poll_s=1.0)

    # --- reconcile and retry
    def reconcile(self, manifest: Path) -> dict[str, Any]:
        result = self.cli("reconcile", str(manifest), "--json", timeout_s=min(120.0, self.clock.left()))
        if result.returncode not in (0, 1):
            raise RuntimeError(f"reconcile failed (exit {result.returncode}): {result.stderr[-1500:]}")
        return dict(json.loads(result.stdout))

    @staticmethod
    def retryable(report: dict[str, Any]) -> int:
        totals = report["totals"]
        transient = sum(g["count"] for g in report["failures"]
                        if not set(g["error_classes"]) or not set(g["error_classes"]) <= PERMANENT_CLASSES)
        return int(totals["missing"] + totals["orphan"] + totals["deferred"] + transient)

    def reconcile_and_retry(self, manifest: Path) -> dict[str, Any]:
        rounds: list[dict[str, Any]] = []
        report = self.reconcile(manifest)
        for round_no in range(1, MAX_RETRY_ROUNDS + 1):
            todo = self.retryable(report)
            self.note(f"reconcile: {_brief(report['totals'])}; retryable {todo}")
            if todo == 0 or self.clock.left(45) <= 0:
                break
            budget_s = min(150.0, self.clock.left(45))
            result = self.cli("retry", str(manifest), "--wait", "--timeout", f"{budget_s:.0f}",
                              timeout_s=budget_s + 30)
            said = re.search(r"retry run \S+: .*? already done", " ".join(result.stderr.split()))
            rounds.append({"round": round_no, "retryable": todo, "exit": result.returncode,
                           "said": said.group(0) if said else result.stderr.strip()[-200:]})
            self.note(f"retry round {round_no}: {rounds[-1]['said']}; exit {result.returncode}")
            self.wait_for_drain(min(60.0, self.clock.left(40)), quiet_s=3.0)
            report = self.reconcile(manifest)
        self.figures["rounds"] = rounds
        return report

    # --- the drill
    def run(self) -> dict[str, Any]:
        self.start_services()
        manifest = self.upload_inputs()
        self.note(f"services up; {self.figures['manifest']['lines']} manifest lines, inputs uploaded")
        for _ in range(2):
            self.start_worker()
        submit = self.submit_and_wait(manifest)
        self.kill_a_worker_mid_stream(after_successes=25)
        self.s3_outage(after_successes=55)
        self.redis_restart(after_successes=85)
        self.watch_submit(submit)
        drained = self.wait_for_drain(min(240.0, self.clock.left(120)))
        self.note("first pass drained" if drained else "first pass still busy; going on to reconcile")
        report = self.reconcile_and_retry(manifest)
        self.figures["report"] = report
        self.figures["server"] = self.stats()
        self.audit()
        self.figures["wall_s"] = round(self.clock.elapsed(), 1)
        return self.figures

    def audit(self) -> None:
        logs = sorted((self.workdir / "services").glob("*.log"))
        worker_logs = [w.log_path.read_text(errors="replace") for w in self.workers]
        self.figures["interrupted"] = {"kill": self.figures.get("kill", {}).get("held_tasks", 0),
                                       "s3": self.figures.get("s3", {}).get("running_tasks", 0),
                                       "redis": self.figures.get("redis", {}).get("running_tasks", 0)}
        self.figures["cancelled_on_connection_loss"] = audit.cancelled_on_connection_loss(worker_logs)
        self.figures["s3_requeues"] = audit.storage_requeues(worker_logs)
        self.figures["consumed_after_reconnect"] = {
            w.name: audit.received(w.log_path.read_text(errors="replace")[offset:])
            for w in self.workers for name, offset in self.log_offsets_at_reconnect.items() if name == w.name}
        s3 = self.s3()
        versions = audit.object_versions(s3, OUT_BUCKET, "out/")
        self.figures["versions"] = {"keys": versions.keys, "outputs": versions.outputs,
                                    "provenance": versions.provenance, "failure_rewrites": versions.failure_rewrites}
        self.figures["guard_leftovers"] = audit.guard_leftovers(self.redis())
        self.figures["negative_unclean_in_provenance"] = audit.negative_unclean_deliveries(s3, OUT_BUCKET, "out/")
        redis_hits = self.redis_hits_before_wipe + [str(hit) for hit in self.scanner.scan_redis(self.redis())]
        s3_hits = [str(hit) for hit in self.scanner.scan_s3(s3)]  # every version of every object
        log_hits = [str(hit) for hit in self.scanner.scan_paths(logs)]
        self.figures["secrets"] = {
            "scanner": "pipeline/local/secret_scan.py", "redis": redis_hits, "s3": s3_hits,
            "logs": log_hits, "total": len(redis_hits) + len(s3_hits) + len(log_hits),
            "scanned": {"redis keys before the wipe": self.redis_keys_before_wipe,
                        "redis keys at the end": int(self.redis().dbsize()),
                        "s3 object versions": _count_objects(s3), "log files": len(logs)}}

    def close(self) -> None:
        if self.submit_proc is not None and self.submit_proc.poll() is None:
            os.killpg(self.submit_proc.pid, signal.SIGKILL)
            self.submit_proc.wait(timeout=10)
        for worker in self.workers:  # before Redis, so they shut down without reconnect noise
            worker.stop()
        self.stack.close()


def _wav_bytes(seconds: float, *, seed: int) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, 16000, seed=seed), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _count_objects(s3: Any) -> int:
    """Object versions in every bucket."""
    total = 0
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            total += len(page.get("Versions", []))
    return total


def _brief(totals: dict[str, Any]) -> str:
    names = ("succeeded", "rejected", "failed", "deferred", "orphan", "missing", "invalid")
    return ", ".join(f"{totals[n]} {n}" for n in names if totals.get(n))


def _on_alarm(signum: int, frame: Any) -> None:
    raise HardStop(f"the drill ran past its hard stop of {HARD_STOP_S} s")


def main() -> int:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    (WORKDIR / "services").mkdir(parents=True)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HARD_STOP_S + 30)
    drill = Drill(WORKDIR)
    error: str | None = None
    try:
        drill.run()
    except (HardStop, RuntimeError, OSError, subprocess.TimeoutExpired, httpx.HTTPError, redis.RedisError) as failure:
        error = str(failure)
        drill.note(f"drill stopped early: {error}")
    finally:
        signal.alarm(0)
        drill.close()
    figures = drill.figures
    figures["error"] = error
    figures["when"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (WORKDIR / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    ok = print_table(figures, cap=CAP, hard_stop_s=HARD_STOP_S)
    print(f"logs and figures: {WORKDIR}/")
    return 0 if ok and error is None else 1


if __name__ == "__main__":
    sys.exit(main())
