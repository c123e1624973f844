"""The end of a run, decided exactly once: the worker whose job is the run's last writes its result files.

Redis keys (expire with the run's other keys, ``RUN_TTL_S``):

    sts:run:{run_id}:ended       set    job ids that reached a terminal state (a redelivered job counts once)
    sts:run:{run_id}:finished    string when the run finished (epoch seconds); set once, by the job that ended last
    sts:run:{run_id}:meta        hash   (``RunState``) its ``enqueued`` field is how many jobs must end

One script adds the job and, when the set holds every enqueued job, sets the flag with NX: of any number of workers
ending jobs at once, exactly one sees the run finish, even when the submitting process is long gone. Several
deliveries of one job add it once, so a redelivery can neither finish a run early nor twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.manifest.load import ManifestLimits
from pipeline.report.reconcile import reconcile
from pipeline.report.results import write_results
from pipeline.run.control import load_control
from pipeline.run.notify import progress_due, run_counts, run_notifier, tell
from pipeline.run.state import RUN_TTL_S
from pipeline.run.stored import load_run, run_prefix, shards_of_run
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.s3 import Storage

log = logging.getLogger(__name__)

__all__ = ["RunFinish", "finish_if_last", "write_run_results"]

#: KEYS[1] ended set, KEYS[2] finished flag, KEYS[3] meta hash; ARGV[1] job id, ARGV[2] now, ARGV[3] ttl_s.
#: Returns 1 when this call finished the run, else 0.
_END_JOB = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local expected = tonumber(redis.call('HGET', KEYS[3], 'enqueued') or '-1')
if expected < 0 or redis.call('SCARD', KEYS[1]) < expected then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then
  return 1
end
return 0
"""


class RunFinish:
    """Count a run's ended jobs and tell the one caller that ends the last."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._redis = client
        self.run_id = run_id
        self._ended = f"sts:run:{run_id}:ended"
        self._finished = f"sts:run:{run_id}:finished"
        self._meta = f"sts:run:{run_id}:meta"

    def expect(self, enqueued: int) -> None:
        """Submit says how many jobs must end (skipped ones never run, so they are not counted)."""
        self._redis.hset(self._meta, "enqueued", str(enqueued))

    def job_ended(self, job_id: str, state: JobState) -> bool:
        """Record that ``job_id`` reached ``state``; True for exactly one call per run: the one that ended it."""
        if not state.terminal:
            return False
        keys = [self._ended, self._finished, self._meta]
        return bool(self._redis.eval(_END_JOB, len(keys), *keys, job_id, str(time.time()), str(RUN_TTL_S)))

    def finished_at(self) -> float | None:
        value = self._redis.get(self._finished)
        return float(value) if value else None


def write_run_results(storage: Storage, root: S3Uri, run_id: str, limits: ManifestLimits) -> tuple[S3Uri, S3Uri]:
    """Reconcile the stored run from S3 and write its results.jsonl and errors.jsonl beside it."""
    stored = load_run(storage, root, run_id)
    report = reconcile(storage, shards_of_run(stored, limits=limits), run_id=run_id,
                       cancelled=load_control(storage, root, run_id).cancelled)
    return write_results(storage, run_prefix(root, run_id), report)


def finish_if_last(client: Any, storage: Storage, run_id: str, job_id: str, state: JobState,
                   settings: Settings) -> bool:
    """After a job ends: when it was the run's last, write the run's result files and send ``run.finished`` (once);
    else send ``run.progress`` when one is due. Never raises: a job's outcome is decided already, and
    ``reconcile --results`` can always write the files again."""
    try:
        if not RunFinish(client, run_id).job_ended(job_id, state):
            hook = run_notifier(client, run_id)
            if hook is not None and progress_due(client, run_id, hook[1]):
                hook[0].send("run.progress", run_id, run_counts(client, run_id))
            return False
        runs_uri = client.hget(f"sts:run:{run_id}:meta", "runs_root")
        if not runs_uri:
            log.warning("run %s finished; no runs root in its live state, so no result files", run_id)
            tell(client, run_id, "run.finished")
            return True
        root = S3Uri.parse(runs_uri.decode() if isinstance(runs_uri, bytes) else str(runs_uri), require_key=False)
        written = write_run_results(storage, S3Uri(root.bucket, root.key.rstrip("/")), run_id,
                                    ManifestLimits.from_settings(settings))
        log.info("run %s finished: wrote %s", run_id, ", ".join(map(str, written)))
        tell(client, run_id, "run.finished", {"results": str(written[0]), "errors": str(written[1])})
        return True
    except (PipelineError, redis.RedisError) as error:
        log.warning("run %s: result files not written (%s); `sts-pipeline reconcile --run %s --results` writes "
                    "them", run_id, getattr(error, "message", type(error).__name__), run_id)
        return False
