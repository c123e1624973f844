"""The commit marker on a real S3 server: first commit wins, failures yield to success, records match the bytes."""

from __future__ import annotations

import hashlib

from pipeline.config import Settings
from pipeline.local.services import LocalStack
from pipeline.errors import InputError, RejectedError
from pipeline.storage.scan import scan_outputs
from pipeline.storage.records import build_failure, commit, failure_uri, is_committed, provenance_uri, record_failure
from pipeline.s3uri import S3Uri
from pipeline.storage.s3 import Storage


def _storage(stack: LocalStack) -> Storage:
    with stack.applied():
        return Storage.from_settings(Settings())


def _upload(storage: Storage, uri: S3Uri, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    storage.put_bytes(uri, data)
    storage.client.copy_object(Bucket=uri.bucket, Key=uri.key, CopySource={"Bucket": uri.bucket, "Key": uri.key},
                               Metadata={"sha256": sha}, MetadataDirective="REPLACE")
    return sha


def test_first_commit_wins_and_a_second_is_refused(stack: LocalStack, bucket: str) -> None:
    storage = _storage(stack)
    out = S3Uri(bucket, "a/out.mp3")
    sha = _upload(storage, out, b"audio-1")
    assert commit(storage, out, {"output": {"sha256": sha}, "request_ids": ["r1"]}) is True
    assert commit(storage, out, {"output": {"sha256": sha}, "request_ids": ["r2"]}) is False
    record, _ = storage.get_json(provenance_uri(out))  # type: ignore[misc]
    assert record["request_ids"] == ["r1"] and record["status"] == "succeeded" and record["schema_version"] == 1


def test_a_late_duplicate_that_replaced_the_bytes_takes_over_the_record(stack: LocalStack, bucket: str) -> None:
    storage = _storage(stack)
    out = S3Uri(bucket, "b/out.mp3")
    first = _upload(storage, out, b"audio-first")
    assert commit(storage, out, {"output": {"sha256": first}, "request_ids": ["r1"]})
    second = _upload(storage, out, b"audio-second")
    assert commit(storage, out, {"output": {"sha256": second}, "request_ids": ["r2"]}) is True
    record, _ = storage.get_json(provenance_uri(out))  # type: ignore[misc]
    assert record["output"]["sha256"] == second and record["superseded_request_ids"] == ["r1"]


def test_success_removes_the_failure_record_and_failure_never_overwrites_success(stack: LocalStack,
                                                                                 bucket: str) -> None:
    storage = _storage(stack)
    out = S3Uri(bucket, "c/out.wav")
    failure = build_failure(error=InputError("input is not audio", reason="not_audio"), base={"job_id": "j"})
    record_failure(storage, out, failure)
    assert storage.head(failure_uri(out)) is not None
    sha = _upload(storage, out, b"audio")
    commit(storage, out, {"output": {"sha256": sha}})
    assert storage.head(failure_uri(out)) is None
    record_failure(storage, out, failure)
    assert storage.head(failure_uri(out)) is None and is_committed(storage, out)


def test_a_rejection_is_recorded_with_the_api_detail(stack: LocalStack, bucket: str) -> None:
    storage = _storage(stack)
    out = S3Uri(bucket, "d/out.wav")
    detail = [{"loc": ["body", "seed"], "msg": "too big", "type": "value_error"}]
    record_failure(storage, out, build_failure(error=RejectedError("rejected", detail=detail), base={}))
    record, _ = storage.get_json(failure_uri(out))  # type: ignore[misc]
    assert record["status"] == "rejected" and record["error"]["detail"] == detail and record["error"]["status"] == 422


def test_scan_outputs_reads_listings_not_heads(stack: LocalStack, bucket: str) -> None:
    storage = _storage(stack)
    outputs = [f"s3://{bucket}/run/x{n}.mp3" for n in range(5)]
    _upload(storage, S3Uri.parse(outputs[0]), b"a")
    commit(storage, S3Uri.parse(outputs[0]), {"output": {"sha256": "x"}})
    _upload(storage, S3Uri.parse(outputs[1]), b"b")
    record_failure(storage, S3Uri.parse(outputs[2]), {"status": "failed"})
    seen = scan_outputs(storage, outputs)
    assert (seen[outputs[0]].output, seen[outputs[0]].provenance, seen[outputs[0]].failure) == (True, True, False)
    assert (seen[outputs[1]].output, seen[outputs[1]].provenance) == (True, False)
    assert seen[outputs[2]].failure and not seen[outputs[2]].output
    assert not any(vars(seen[outputs[4]]).values())
