"""A job's state: the one vocabulary of Redis (live state), S3 (records) and the reports.

    queued → running → succeeded | failed | rejected | deferred      what a worker decides
    queued | running → cancelled                                     the run was cancelled (``sts-pipeline cancel``)
    skipped                                                          already committed when the run was submitted
    orphan | missing                                                 what only the reconciler can say, from S3

Redis holds the first two lines while a run goes on; S3 holds the terminal ones for good (a provenance record is
``succeeded``, a failure record is ``failed``, ``rejected``, ``deferred`` or ``cancelled``); ``orphan`` and
``missing`` are what S3 says about a job with no record at all, and a line of a cancelled run with no record is
``cancelled`` (the run's ``control.json`` says so), not ``missing``. ``cancelled`` was added last to each tuple:
report columns and their order are a contract.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["FAILURE_STATES", "LEDGER_STATES", "LIVE_STATES", "NOT_SUCCEEDED", "JobState"]


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # the API refused the request itself (e.g. 422): the same request would be refused again
    DEFERRED = "deferred"  # not started: budget reached, quota spent; retry later
    SKIPPED = "skipped"  # already committed by an earlier run
    ORPHAN = "orphan"  # the output was uploaded but never committed (the worker died in between)
    MISSING = "missing"  # no trace in S3: never ran, or has not run yet
    CANCELLED = "cancelled"  # the run was cancelled before the job's next request

    @property
    def terminal(self) -> bool:
        """Whether a live run is done with this job (orphan and missing are never live states)."""
        return self not in (JobState.QUEUED, JobState.RUNNING)


#: the states a live run can show (what ``status`` and ``submit --wait`` count)
LIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED,
               JobState.DEFERRED, JobState.SKIPPED, JobState.CANCELLED)
#: the states S3 alone can tell (what ``reconcile`` reports), in report order
LEDGER_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED, JobState.DEFERRED, JobState.ORPHAN,
                 JobState.MISSING, JobState.CANCELLED)
#: the states a failure record can hold
FAILURE_STATES = frozenset({JobState.FAILED, JobState.REJECTED, JobState.DEFERRED, JobState.CANCELLED})
#: live states after which a waiting ``submit``/``retry`` exits 1: not (yet) succeeded
NOT_SUCCEEDED = frozenset({JobState.FAILED, JobState.REJECTED, JobState.DEFERRED, JobState.QUEUED,
                           JobState.RUNNING, JobState.CANCELLED})
