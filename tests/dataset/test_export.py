"""Exports of a run on the in-memory S3, each loaded by the real library: datasets, webdataset, a NeMo manifest."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from pipeline.dataset.export import export_run
from pipeline.dataset.sink import open_sink
from pipeline.errors import ConfigError
from pipeline.manifest.load import parse_manifest
from pipeline.run.stored import save_run
from pipeline.s3uri import S3Uri
from pipeline.storage.examples import example_identity, example_provenance
from pipeline.storage.memory import memory_storage
from pipeline.storage.records import commit
from pipeline.storage.s3 import Storage

VOICES = ["BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9"]
ROOT = S3Uri("out-bucket", "sts-runs")


def _wav(seconds: float, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, (np.sin(np.arange(int(seconds * rate)) / 7) * 8000).astype(np.int16), rate, format="WAV")
    return buffer.getvalue()


def _pcm(seconds: float, rate: int) -> bytes:
    return (np.sin(np.arange(int(seconds * rate)) / 5) * 8000).astype("<i2").tobytes()


def _night(storage: Storage, run_id: str, clips: range, *, skip_last: bool = False) -> list[Any]:
    """A run of len(clips) clips × two voices: .pcm outputs (headerless, pcm_16000) committed like a worker would."""
    lines = [{"input": f"s3://in-bucket/clips/c{i}.wav", "voice_ids": VOICES, "output_format": "pcm_16000",
              "output": "s3://out-bucket/ds/{voice_id}/{stem}.{ext}", "id": f"c{i}", "metadata": {"n": i}}
             for i in clips]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    shard = parse_manifest(data, f"{run_id}.jsonl")
    save_run(storage, ROOT, run_id, {"output_prefix": None}, {shard.name: data})
    committed = shard.entries[:-1] if skip_last else shard.entries
    for entry in committed:
        seconds = 1.0 + 0.25 * int(entry.job.id[1:])
        storage.put_bytes(S3Uri.parse(entry.job.input), _wav(seconds, 22050))
        audio = _pcm(seconds, 16000)
        storage.put_bytes(S3Uri.parse(entry.output), audio)
        identity = example_identity(job_id=entry.job_id, run_id=run_id, shard=shard.name, line=entry.line,
                                    input_uri=entry.job.input, output_uri=entry.output, manifest_id=entry.job.id,
                                    metadata=entry.job.metadata)
        commit(storage, S3Uri.parse(entry.output), example_provenance(
            identity, duration_s=seconds, output_format="pcm_16000", params=entry.job.request_params(),
            output_sha256=hashlib.sha256(audio).hexdigest(), request_id=f"req-{entry.job_id}"))
    return committed


@pytest.fixture()
def storage() -> Storage:
    return memory_storage("in-bucket", "out-bucket")


def _export(storage: Storage, run_id: str, fmt: str, to: Path | str, **kwargs: Any) -> Any:
    sink = open_sink(str(to), storage)
    try:
        return export_run(storage, ROOT, run_id, fmt, sink, command=f"sts-pipeline export --run {run_id}", **kwargs)
    finally:
        sink.close()


def _decoded(data: bytes) -> tuple[float, int]:
    samples, rate = sf.read(io.BytesIO(data))
    return len(samples) / rate, rate


def test_hf_export_loads_with_datasets_as_two_audio_columns(storage: Storage, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    committed = _night(storage, "night-1", range(3), skip_last=True)
    summary = _export(storage, "night-1", "hf", tmp_path / "hf", max_shard_bytes=150_000)
    assert summary.rows == 5 and summary.stats.not_succeeded == 1 and len(summary.files) > 1
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "hf" / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["source_audio"], datasets.Audio)
    assert isinstance(ds.features["converted_audio"], datasets.Audio)
    ds = ds.cast_column("source_audio", datasets.Audio(decode=False))
    ds = ds.cast_column("converted_audio", datasets.Audio(decode=False))
    assert sorted(ds["key"]) == sorted(e.job_id for e in committed)
    for row in ds:
        seconds = row["input_duration_s"]
        assert _decoded(row["source_audio"]["bytes"]) == pytest.approx((seconds, 22050), abs=1e-3)
        assert _decoded(row["converted_audio"]["bytes"]) == pytest.approx((row["output_duration_s"], 16000), abs=1e-3)
        assert row["voice_id"] in VOICES and row["request_ids"] == [f"req-{row['key']}"]
        assert json.loads(row["metadata"])["n"] == int(row["id"][1:]) and row["credits"] == 50.0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| rows | 5 |" in card and VOICES[0] in card and "sts-pipeline export --run night-1" in card


def test_webdataset_export_yields_every_pair_with_its_json(storage: Storage, tmp_path: Path) -> None:
    import webdataset as wds

    committed = _night(storage, "night-1", range(3))
    summary = _export(storage, "night-1", "webdataset", tmp_path / "wds", max_shard_bytes=120_000)
    urls = [str(tmp_path / "wds" / name) for name in summary.files]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [e.job_id for e in committed]
    for sample in samples:
        meta = json.loads(sample["json"])
        assert _decoded(sample["src.wav"])[1] == 22050
        assert _decoded(sample["tgt.wav"]) == pytest.approx((meta["output_duration_s"], 16000), abs=1e-3)
        assert meta["output_sha256"] and meta["seed"] is None


def test_nemo_manifest_paths_exist_and_durations_match(storage: Storage, tmp_path: Path) -> None:
    _night(storage, "night-1", range(2))
    _export(storage, "night-1", "nemo", tmp_path / "nemo")
    lines = [json.loads(line) for line in (tmp_path / "nemo" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        source, target = tmp_path / "nemo" / line["input_filepath"], tmp_path / "nemo" / line["target_filepath"]
        assert _decoded(source.read_bytes())[0] == pytest.approx(line["duration"], abs=1e-3)
        assert _decoded(target.read_bytes())[0] == pytest.approx(line["target_duration"], abs=1e-3)


def test_since_adds_only_the_later_nights_rows_without_rewriting_shards(storage: Storage, tmp_path: Path) -> None:
    _night(storage, "night-1", range(2))
    first = _export(storage, "night-1", "hf", tmp_path / "hf")
    before = {name: (tmp_path / "hf" / name).read_bytes() for name in first.files}
    with pytest.raises(ConfigError, match="already holds an export"):
        _export(storage, "night-2", "hf", tmp_path / "hf")
    _night(storage, "night-2", range(3))  # clips 0 and 1 again (same jobs), and clip 2
    second = _export(storage, "night-2", "hf", tmp_path / "hf", since="night-1")
    assert (second.rows, second.stats.skipped, second.state["rows"]) == (2, 4, 6)
    assert {name: (tmp_path / "hf" / name).read_bytes() for name in first.files} == before
    assert second.files == ["data/train-00001.parquet"] and second.state["runs"] == ["night-1", "night-2"]


def test_an_export_to_s3_uploads_the_shards_and_the_card(storage: Storage, tmp_path: Path) -> None:
    _night(storage, "night-1", range(1))
    summary = _export(storage, "night-1", "webdataset", "s3://out-bucket/datasets/night")
    keys = sorted(info.uri.key for info in storage.list("out-bucket", "datasets/"))
    assert keys == ["datasets/night/README.md", "datasets/night/export.json", "datasets/night/shard-00000.tar"]
    assert summary.rows == 2


def test_the_features_metadata_is_what_datasets_itself_writes() -> None:
    import datasets

    from pipeline.dataset.export_hf import SCHEMA

    features = datasets.Features.from_arrow_schema(SCHEMA)
    assert json.loads(features.arrow_schema.metadata[b"huggingface"]) == json.loads(SCHEMA.metadata[b"huggingface"])
    assert features.arrow_schema.remove_metadata() == SCHEMA.remove_metadata()


def test_the_export_command(storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    _night(storage, "night-1", range(1))
    monkeypatch.setattr("pipeline.storage.s3.Storage.from_settings", classmethod(lambda cls, settings: storage))
    result = CliRunner().invoke(main, ["export", "--run", "night-1", "--format", "nemo", "--to",
                                       str(tmp_path / "n"), "--runs-uri", "s3://out-bucket/sts-runs"])
    assert result.exit_code == 0, result.output
    assert "2 rows in 1 file(s)" in result.output and (tmp_path / "n" / "manifest.jsonl").exists()


def test_a_nemo_append_keeps_the_earlier_lines_and_adds_the_new(storage: Storage, tmp_path: Path) -> None:
    _night(storage, "night-1", range(2))
    _export(storage, "night-1", "nemo", tmp_path / "nemo")
    before = (tmp_path / "nemo" / "manifest.jsonl").read_text()
    _night(storage, "night-2", range(3))
    second = _export(storage, "night-2", "nemo", tmp_path / "nemo", append=True)
    after = (tmp_path / "nemo" / "manifest.jsonl").read_text()
    assert second.rows == 2 and after.startswith(before) and len(after.splitlines()) == 6
    assert all((tmp_path / "nemo" / json.loads(line)["target_filepath"]).exists() for line in after.splitlines())
