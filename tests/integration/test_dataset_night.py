"""A dataset night end to end: clips in S3 → from-prefix (3 clips × 4 voices × 2 seeds) → validate → submit with a
real worker and the offline server → a re-submit enqueues nothing → export → loaded by datasets and webdataset."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
import soundfile as sf

from pipeline.local.services import LocalStack
from tests.support import VOICES, lane, write_input


@pytest.fixture(scope="module")
def night(offline_sts: LocalStack, s3, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("night")
    tag = uuid.uuid4().hex[:8]
    inputs, outputs = f"night-in-{tag}", f"night-out-{tag}"
    s3.create_bucket(Bucket=inputs)
    s3.create_bucket(Bucket=outputs)
    for n in range(3):
        s3.upload_file(str(write_input(tmp / f"clip-{n}.wav", 0.6 + 0.2 * n, seed=n)), inputs, f"clips/clip-{n}.wav")
    s3.put_object(Bucket=inputs, Key="clips/notes.txt", Body=b"not audio")
    shards = tmp / "shards"
    with lane(offline_sts) as test_lane:
        made = test_lane.cli("manifest", "from-prefix", f"s3://{inputs}/clips/", *(f"--voice={v}" for v in VOICES),
                             "--seed", "1", "--seed", "2", "--output-format", "pcm_16000",
                             "--output-prefix", f"s3://{outputs}/night", "-o", str(shards))
        shard = str(shards / "prefix-00000.jsonl")
        checked = test_lane.cli("validate", shard)
        test_lane.start_worker(concurrency=2)
        submitted = test_lane.cli("submit", shard, "--wait", "--timeout", "240", "--run-id", f"night-{tag}")
        again = test_lane.cli("submit", shard, "--run-id", f"night-{tag}-again")
        exports = {fmt: test_lane.cli("export", "--run", f"night-{tag}", "--format", fmt, "--to", str(tmp / fmt),
                                      "--runs-uri", f"s3://{outputs}/sts-runs") for fmt in ("hf", "webdataset")}
    return {"tmp": tmp, "made": made, "checked": checked, "submitted": submitted, "again": again, "exports": exports}


def test_from_prefix_writes_one_line_per_clip_that_validates(night) -> None:  # type: ignore[no-untyped-def]
    assert night["made"].returncode == 0, night["made"].stderr[-2000:]
    assert "3 clips, 24 jobs in 1 shard(s)" in night["made"].stdout and "1 not audio" in night["made"].stdout
    assert night["checked"].returncode == 0, night["checked"].stdout + night["checked"].stderr


def test_24_jobs_with_24_outputs_and_a_resubmit_enqueues_none(night) -> None:  # type: ignore[no-untyped-def]
    assert night["submitted"].returncode == 0, night["submitted"].stderr[-3000:]
    assert "24 jobs, 24 enqueued, 0 already done" in night["submitted"].stderr
    assert night["again"].returncode == 0, night["again"].stderr[-2000:]
    assert "24 jobs, 0 enqueued, 24 already done" in night["again"].stderr


def test_the_exports_load_with_the_real_libraries(night, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import webdataset as wds

    for fmt, result in night["exports"].items():
        assert result.returncode == 0, f"{fmt}: {result.stdout}{result.stderr[-2000:]}"
    tmp: Path = night["tmp"]
    ds = datasets.load_dataset("parquet", data_files=str(tmp / "hf" / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp / "cache"))
    assert isinstance(ds.features["converted_audio"], datasets.Audio) and ds.num_rows == 24
    ds = ds.cast_column("source_audio", datasets.Audio(decode=False))
    ds = ds.cast_column("converted_audio", datasets.Audio(decode=False))
    assert len({(row["voice_id"], row["seed"], row["id"]) for row in ds}) == 24
    for row in ds:
        samples, rate = sf.read(io.BytesIO(row["converted_audio"]["bytes"]))
        assert rate == 16000 and abs(len(samples) / rate - row["input_duration_s"]) < 0.05
    tars = sorted(str(path) for path in (tmp / "webdataset").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert len(samples) == 24 and all(json.loads(s["json"])["model_id"] for s in samples)
