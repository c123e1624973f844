"""Every ``reason`` code a failure record, a deferral or a report can carry: the one list of them.

Reports group failures by these codes, so they are a contract with the people who read reports and with scripts.
``README.md``'s failure table is checked against this list by a test. The one family that is not listed code by code
is ``http_<status>``: the service answered a status no other code names (see ``http_reason``).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["REASON_DESCRIPTIONS", "Reason", "http_reason"]


class Reason(str, Enum):
    # the input object
    MISSING_INPUT = "missing_input"
    MISSING_OBJECT = "missing_object"
    MISSING_BUCKET = "missing_bucket"
    MISSING_OUTPUT_BUCKET = "missing_output_bucket"
    INPUT_BUCKET_NOT_ALLOWED = "input_bucket_not_allowed"
    OUTPUT_BUCKET_NOT_ALLOWED = "output_bucket_not_allowed"
    EMPTY_INPUT = "empty_input"
    NOT_AUDIO = "not_audio"
    CORRUPT_AUDIO = "corrupt_audio"
    NO_DURATION = "no_duration"
    DECODE_TIMEOUT = "decode_timeout"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    BAD_INPUT = "bad_input"
    # the output
    RESERVED_KEY = "reserved_key"
    KEY_TOO_LONG = "key_too_long"
    OUTPUT_EXISTS = "output_exists"
    # S3
    S3_ACCESS_DENIED = "s3_access_denied"
    S3_ERROR = "s3_error"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    CONDITION_FAILED = "condition_failed"
    UNREADABLE_RECORD = "unreadable_record"
    # the service
    TIMEOUT = "timeout"
    NETWORK = "network"
    CUT_STREAM = "cut_stream"
    WRONG_FORMAT = "wrong_format"
    OVERSIZED_RESPONSE = "oversized_response"
    DEADLINE = "deadline"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    API_ERROR = "api_error"
    REJECTED = "rejected"
    AUDIO_TOO_LONG = "audio_too_long"
    INVALID_AUDIO = "invalid_audio"
    REQUEST_TOO_LARGE = "request_too_large"
    OUTPUT_FORMAT_NOT_ALLOWED = "output_format_not_allowed"
    FEATURE_NOT_AVAILABLE = "feature_not_available"
    VOICE_ACCESS_DENIED = "voice_access_denied"
    MODEL_ACCESS_DENIED = "model_access_denied"
    QUOTA_EXCEEDED = "quota_exceeded"
    # the run
    BUDGET = "budget"
    NO_SLOT = "no_slot"
    CLAIMED = "claimed"
    DEFERRED = "deferred"
    DELIVERY_LIMIT = "delivery_limit"
    PERMANENT = "permanent"
    INTERNAL_ERROR = "internal_error"
    CANCELLED = "cancelled"
    # not job outcomes: errors of a command
    CONFIG = "config"
    MANIFEST = "manifest"
    RUN_STATE_LOST = "run_state_lost"
    RUN_CONFLICT = "run_conflict"
    BROKER = "broker"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


#: one line per code, what a user should do about it (the README's table shows these)
REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.MISSING_INPUT: "the input object does not exist: check the line's URI",
    Reason.MISSING_OBJECT: "an object the job needed (a checkpoint, a record) vanished while it ran",
    Reason.MISSING_BUCKET: "a bucket named by the line does not exist",
    Reason.MISSING_OUTPUT_BUCKET: "the output bucket does not exist: create it or fix the output",
    Reason.INPUT_BUCKET_NOT_ALLOWED: "the input bucket is not in STS_ALLOWED_INPUT_BUCKETS",
    Reason.OUTPUT_BUCKET_NOT_ALLOWED: "the output bucket is not in STS_ALLOWED_OUTPUT_BUCKETS",
    Reason.EMPTY_INPUT: "the input holds no bytes or no samples: upload it again",
    Reason.NOT_AUDIO: "ffprobe finds no audio in the input",
    Reason.CORRUPT_AUDIO: "the input (or an output) does not decode to the end: re-export it",
    Reason.NO_DURATION: "neither the header nor a decode tells the input's length: re-encode it",
    Reason.DECODE_TIMEOUT: "ffmpeg/ffprobe ran past its wall-clock limit and was stopped (an endless or hostile input)",
    Reason.TOO_LARGE: "the input is over STS_MAX_INPUT_BYTES",
    Reason.TOO_LONG: "the input is over STS_MAX_INPUT_SECONDS",
    Reason.BAD_INPUT: "the input cannot be converted for another reason (the message says which)",
    Reason.RESERVED_KEY: "the output is a key the pipeline writes itself (a record, a checkpoint, a run's copy): "
                         "choose another output",
    Reason.KEY_TOO_LONG: "the output key leaves no room for its records under S3's 1,024-byte limit: shorten it",
    Reason.OUTPUT_EXISTS: "an object the pipeline did not write is at the output: set \"overwrite\": true on the "
                          "line (or submit --overwrite) to replace it, or choose another output",
    Reason.S3_ACCESS_DENIED: "S3 refused the worker's credentials for that object",
    Reason.S3_ERROR: "S3 answered an error the pipeline does not retry",
    Reason.STORAGE_UNAVAILABLE: "S3 did not answer, or answered 5xx (retried)",
    Reason.CONDITION_FAILED: "a conditional S3 write lost a race (internal; a job never ends with it)",
    Reason.UNREADABLE_RECORD: "a record beside the output is not one this version reads: inspect it",
    Reason.TIMEOUT: "the service did not answer in time (retried)",
    Reason.NETWORK: "the connection to the service failed (retried)",
    Reason.CUT_STREAM: "the audio stream ended early or too short for the input (retried)",
    Reason.WRONG_FORMAT: "the service answered 200 with something that is not audio of the requested output_format "
                         "(an HTML page, another container, a body that does not decode) (retried)",
    Reason.OVERSIZED_RESPONSE: "the service sent far more audio bytes than the input's duration can take (retried)",
    Reason.DEADLINE: "the request ran past its deadline, sized from the input's duration (a stalled or trickling "
                     "body) (retried)",
    Reason.RATE_LIMITED: "the service answered 429 (retried after Retry-After)",
    Reason.TRANSIENT: "another fault worth retrying",
    Reason.API_ERROR: "the service refused the request in a way retrying cannot fix",
    Reason.REJECTED: "the service validated the request and refused it (422)",
    Reason.AUDIO_TOO_LONG: "the service refused the input as too long (400): segment it (STS_MAX_SEGMENT_SECONDS)",
    Reason.INVALID_AUDIO: "the service could not read the input (400): re-export it",
    Reason.REQUEST_TOO_LARGE: "the upload was over the service's size limit (400): compress or segment it",
    Reason.OUTPUT_FORMAT_NOT_ALLOWED: "the plan's tier does not allow that output_format (403): choose another or "
                                      "upgrade",
    Reason.FEATURE_NOT_AVAILABLE: "the plan does not include a feature the request asked for (403)",
    Reason.VOICE_ACCESS_DENIED: "the API key may not use that voice (403)",
    Reason.MODEL_ACCESS_DENIED: "the API key may not use that model (403)",
    Reason.QUOTA_EXCEEDED: "deferred: the account's credits for the period are spent; retry after the reset",
    Reason.BUDGET: "deferred: the run's credit budget would have been crossed",
    Reason.NO_SLOT: "deferred: no concurrency slot within the wait (re-queued)",
    Reason.CLAIMED: "another delivery of the same job was converting it (re-queued; never a final state)",
    Reason.DEFERRED: "deferred for another reason (the message says which)",
    Reason.DELIVERY_LIMIT: "the job's worker died on every delivery (killed, out of memory): poison message",
    Reason.PERMANENT: "another error that retrying cannot fix",
    Reason.INTERNAL_ERROR: "a bug or an unexpected value stopped the job (the message names it): report it, then "
                           "retry",
    Reason.CANCELLED: "the run was cancelled (sts-pipeline cancel) before the job started its next request, or with "
                      "--now while it streamed: nothing more was spent; retry --include-cancelled re-runs it",
    Reason.CONFIG: "settings are missing or inconsistent",
    Reason.MANIFEST: "a manifest cannot be read at all",
    Reason.RUN_STATE_LOST: "a waiting command lost the run's live state in Redis",
    Reason.RUN_CONFLICT: "the run cannot be changed now (its jobs still run)",
    Reason.BROKER: "Redis did not answer a command that needs it",
    Reason.ERROR: "an error of no more precise kind",
}


def http_reason(status: int) -> str:
    """The reason for a status no code names: ``http_<status>`` (e.g. ``http_404``)."""
    return f"http_{status}"
