"""``Storage``'s reads on the in-memory S3: a download bounded by its size before a byte is written, and a bucket
seen to exist asked about once (``MemoryS3.requests`` counts the calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.s3uri import S3Uri
from pipeline.storage import s3 as s3_module
from pipeline.storage.memory import memory_storage


def test_a_download_over_its_bound_is_refused_on_its_length_with_one_get(tmp_path: Path) -> None:
    storage = memory_storage("in")
    storage.put_bytes(S3Uri("in", "big.wav"), b"\0" * 1001)
    dest = tmp_path / "big.wav"
    with pytest.raises(InputError) as refused:
        storage.download(S3Uri("in", "big.wav"), dest, max_bytes=1000)
    assert refused.value.reason == "too_large"
    assert "1001 bytes, over STS_MAX_INPUT_BYTES=1000" in refused.value.message
    assert not dest.exists()
    assert storage.client.requests == {"CreateBucket": 1, "PutObject": 1, "GetObject": 1}  # no HEAD before it


def test_a_download_within_its_bound_keeps_every_byte(tmp_path: Path) -> None:
    storage = memory_storage("in")
    storage.put_bytes(S3Uri("in", "a.wav"), b"RIFF" * 250)
    info, sha = storage.download(S3Uri("in", "a.wav"), tmp_path / "a.wav", max_bytes=1000)
    assert info.size_bytes == 1000 and (tmp_path / "a.wav").read_bytes() == b"RIFF" * 250 and len(sha) == 64


def test_a_missing_input_names_itself(tmp_path: Path) -> None:
    storage = memory_storage("in")
    with pytest.raises(InputError) as missing:
        storage.download(S3Uri("in", "nope.wav"), tmp_path / "x", max_bytes=10)
    assert missing.value.reason == "missing_input" and "check the manifest line's URI" in missing.value.message
    with pytest.raises(InputError) as no_bucket:
        storage.download(S3Uri("gone", "a.wav"), tmp_path / "x", max_bytes=10)
    assert no_bucket.value.reason == "missing_bucket"


def test_a_bucket_seen_to_exist_is_asked_about_once_a_missing_one_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    storage = memory_storage("out")
    assert all(storage.bucket_exists("out") for _ in range(5))
    assert not storage.bucket_exists("nope") and not storage.bucket_exists("nope")
    assert storage.client.requests["HeadBucket"] == 3
    monkeypatch.setattr(s3_module, "BUCKET_SEEN_S", 0.0)  # past the time it is trusted for: asked again
    assert storage.bucket_exists("out")
    assert storage.client.requests["HeadBucket"] == 4
