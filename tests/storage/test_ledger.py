"""The ledger's rules on S3 itself: on the in-memory double here (fast lane), on moto's server in the integration
lane (``-m integration``), the same cases for both.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ConditionFailed, InputError, RejectedError
from pipeline.s3uri import S3Uri
from pipeline.states import JobState
from pipeline.storage.examples import example_failure, example_identity, example_provenance
from pipeline.storage.memory import MemoryS3
from pipeline.storage.records import (
    FailureRecord,
    ProvenanceRecord,
    commit,
    failure_uri,
    is_committed,
    provenance_uri,
    record_failure,
)
from pipeline.storage.s3 import Storage
from pipeline.storage.scan import scan_outputs


@pytest.fixture(params=["memory", pytest.param("moto", marks=pytest.mark.integration)])
def storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    if request.param == "memory":
        yield Storage(MemoryS3())
        return
    stack = request.getfixturevalue("stack")
    with stack.applied():
        from pipeline.config import Settings

        yield Storage.from_settings(Settings())


@pytest.fixture
def bucket(storage: Storage) -> str:
    name = f"ledger-{uuid.uuid4().hex[:10]}"
    storage.ensure_bucket(name)
    return name


def _upload(storage: Storage, uri: S3Uri, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audio"
        path.write_bytes(data)
        storage.upload_file(path, uri, content_type="audio/mpeg", sha256=sha)
    return sha


def _record(sha: str, request_id: str) -> ProvenanceRecord:
    return example_provenance(example_identity(), output_sha256=sha, request_id=request_id)


def test_a_conditional_put_refuses_an_existing_key(storage: Storage, bucket: str) -> None:
    uri = S3Uri(bucket, "marker.json")
    storage.put_json(uri, {"n": 1}, if_none_match=True)
    with pytest.raises(ConditionFailed):
        storage.put_json(uri, {"n": 2}, if_none_match=True)
    record, etag = storage.get_json(uri)  # type: ignore[misc]
    assert record == {"n": 1}
    storage.put_json(uri, {"n": 3}, if_match=etag)
    with pytest.raises(ConditionFailed):
        storage.put_json(uri, {"n": 4}, if_match=etag)
    assert storage.get_json(uri)[0] == {"n": 3}  # type: ignore[index]


def test_first_commit_wins_and_a_second_is_refused(storage: Storage, bucket: str) -> None:
    out = S3Uri(bucket, "a/out.mp3")
    sha = _upload(storage, out, b"audio-1")
    assert commit(storage, out, _record(sha, "r1")) is True
    assert commit(storage, out, _record(sha, "r2")) is False
    record, _ = storage.get_json(provenance_uri(out))  # type: ignore[misc]
    assert record["request_ids"] == ["r1"] and record["status"] == "succeeded" and record["schema_version"] == 1
    assert ProvenanceRecord.from_dict(record).request_ids == ["r1"]


def test_a_late_duplicate_that_replaced_the_bytes_takes_over_the_record(storage: Storage, bucket: str) -> None:
    out = S3Uri(bucket, "b/out.mp3")
    first = _upload(storage, out, b"audio-first")
    assert commit(storage, out, _record(first, "r1"))
    second = _upload(storage, out, b"audio-second")
    assert commit(storage, out, _record(second, "r2")) is True
    stored = storage.get_json(provenance_uri(out))[0]  # type: ignore[index]
    assert stored["output"]["sha256"] == second and stored["superseded_request_ids"] == ["r1"]


def test_success_removes_the_failure_record_and_failure_never_overwrites_success(storage: Storage,
                                                                                 bucket: str) -> None:
    out = S3Uri(bucket, "c/out.wav")
    failure = example_failure(example_identity(), InputError("input is not audio", reason="not_audio"))
    record_failure(storage, out, failure)
    assert storage.head(failure_uri(out)) is not None
    commit(storage, out, _record(_upload(storage, out, b"audio"), "r1"))
    assert storage.head(failure_uri(out)) is None
    record_failure(storage, out, failure)
    assert storage.head(failure_uri(out)) is None and is_committed(storage, out)


def test_a_failure_record_reads_back_typed(storage: Storage, bucket: str) -> None:
    out = S3Uri(bucket, "d/out.wav")
    detail = [{"loc": ["body", "seed"], "msg": "too big", "type": "value_error"}]
    record_failure(storage, out, example_failure(example_identity(), RejectedError("rejected", detail=detail)))
    record, _ = storage.get_json(failure_uri(out))  # type: ignore[misc]
    assert record["status"] == "rejected" and record["error"]["detail"] == detail and record["error"]["status"] == 422
    stored = FailureRecord.from_dict(record)
    assert stored.state is JobState.REJECTED and stored.error["detail"] == detail


def test_scan_outputs_reads_listings_not_heads(storage: Storage, bucket: str) -> None:
    outputs = [f"s3://{bucket}/run/x{n}.mp3" for n in range(5)]
    _upload(storage, S3Uri.parse(outputs[0]), b"a")
    commit(storage, S3Uri.parse(outputs[0]), _record(hashlib.sha256(b"a").hexdigest(), "r"))
    _upload(storage, S3Uri.parse(outputs[1]), b"b")
    record_failure(storage, S3Uri.parse(outputs[2]), example_failure(example_identity(), InputError("x")))
    seen = scan_outputs(storage, outputs)
    assert (seen[outputs[0]].output, seen[outputs[0]].provenance, seen[outputs[0]].failure) == (True, True, False)
    assert (seen[outputs[1]].output, seen[outputs[1]].provenance) == (True, False)
    assert seen[outputs[2]].failure and not seen[outputs[2]].output
    assert not any(vars(seen[outputs[4]]).values())


def test_the_scan_ignores_keys_that_only_start_like_an_output(storage: Storage, bucket: str) -> None:
    outs = [f"s3://{bucket}/dir/{n}.mp3" for n in range(4)]
    _upload(storage, S3Uri.parse(outs[0]), b"a")
    commit(storage, S3Uri.parse(outs[0]), _record(hashlib.sha256(b"a").hexdigest(), "r"))
    record_failure(storage, S3Uri.parse(outs[1]), example_failure(example_identity(), InputError("x")))
    _upload(storage, S3Uri.parse(outs[2]), b"orphan")
    storage.put_bytes(S3Uri(bucket, "dir/3.mp3.extra"), b"not ours")
    seen = scan_outputs(storage, outs)
    assert [(p.output, p.provenance, p.failure) for p in (seen[o] for o in outs)] == [
        (True, True, False), (False, False, True), (True, False, False), (False, False, False)]


def test_a_missing_bucket_is_an_input_error_not_an_exception(storage: Storage) -> None:
    with pytest.raises(InputError) as raised:
        storage.require(S3Uri(f"no-such-{uuid.uuid4().hex[:8]}", "x.wav"))
    assert raised.value.reason == "missing_bucket"
