"""Reading good manifests: the examples, CSV cell coercion, write/read round trips, job ids and derived outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import Settings, get_settings
from pipeline.errors import ManifestError
from pipeline.manifest.load import (
    ManifestLimits,
    ManifestProblem,
    check_output_prefix,
    load_manifest,
    load_manifests,
    parse_manifest,
    write_manifest,
)
from pipeline.offline.voices import VOICES

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
DATASET_PREFIX = "s3://voice-datasets/converted"


def test_podcast_example_loads_every_episode() -> None:
    shard = load_manifest(EXAMPLES / "podcast.jsonl")
    assert shard.problems == []
    assert shard.name == "podcast.jsonl"
    assert shard.line_count == len(shard.entries) == 4
    first = shard.entries[0]
    assert (first.shard, first.line) == ("podcast.jsonl", 1)
    assert first.job.input == "s3://podcast-archive/episodes/ep-101.mp3"
    assert first.job.model_id == "eleven_multilingual_sts_v2"
    assert first.job.voice_settings is not None and first.job.voice_settings.stability == 0.55
    assert first.job.metadata == {"show": "Field Notes", "episode": 101, "title": "Listening to Glaciers"}
    assert first.output == first.job.output == "s3://podcast-archive/revoiced/ep-101.mp3"
    assert first.job_id == first.job.job_id()
    assert len({entry.job_id for entry in shard.entries}) == 4


def test_dataset_example_derives_outputs_from_the_prefix() -> None:
    shard = load_manifest(EXAMPLES / "dataset.csv", output_prefix=DATASET_PREFIX)
    assert shard.problems == []
    assert [entry.line for entry in shard.entries] == [2, 3, 4, 5, 6, 7]
    for entry in shard.entries:
        assert entry.job.file_format == "pcm_s16le_16"
        assert entry.output == f"{DATASET_PREFIX}/{entry.job_id}.pcm"
    assert shard.entries[0].raw["metadata"] == {"speaker": "spk01",
                                                "text": "The birch canoe slid on the smooth planks."}
    assert shard.entries[3].raw["voice_settings"] == {"stability": 0.5}
    assert "voice_settings" not in shard.entries[4].raw


def test_demo_example_uses_the_offline_servers_voices() -> None:
    shard = load_manifest(EXAMPLES / "demo.jsonl")
    assert shard.problems == []
    assert 4 <= len(shard.entries) <= 6
    assert {entry.job.voice_id for entry in shard.entries} <= set(VOICES)
    assert len({entry.job.output_format for entry in shard.entries}) >= 4
    for entry in shard.entries:
        name = entry.job.input.removeprefix("s3://sts-demo-in/samples/").removesuffix(".wav")
        assert entry.output.startswith(f"s3://sts-demo-out/converted/{name}.")


def test_csv_cells_are_coerced_to_each_fields_type() -> None:
    data = (b"input,output,voice_id,seed,enable_logging,remove_background_noise,max_segment_seconds,"
            b"optimize_streaming_latency,voice_settings,voice_settings.speed,voice_settings.use_speaker_boost,metadata\n"
            b's3://in-bucket/a.wav,s3://out-bucket/a.mp3,v1, 42 ,FALSE,Yes,120,0,"{""stability"": 0.25}",1.1,no,'
            b'"{""title"": ""A, B""}"\n'
            b"s3://in-bucket/b.wav,s3://out-bucket/b.mp3,v1,,1,0,,,,,,\n")
    shard = parse_manifest(data, "jobs.csv")
    assert shard.problems == []
    first, second = shard.entries
    assert first.raw == {
        "input": "s3://in-bucket/a.wav", "output": "s3://out-bucket/a.mp3", "voice_id": "v1", "seed": 42,
        "enable_logging": False, "remove_background_noise": True, "max_segment_seconds": 120.0,
        "optimize_streaming_latency": 0,
        "voice_settings": {"stability": 0.25, "speed": 1.1, "use_speaker_boost": False},
        "metadata": {"title": "A, B"},
    }
    assert first.job.voice_settings is not None and first.job.voice_settings.speed == 1.1
    assert second.raw == {"input": "s3://in-bucket/b.wav", "output": "s3://out-bucket/b.mp3", "voice_id": "v1",
                          "enable_logging": True, "remove_background_noise": False}
    assert second.job.seed is None


def test_the_same_job_has_the_same_id_in_jsonl_and_csv() -> None:
    line = {"input": "s3://in-bucket/a.wav", "output": "s3://out-bucket/a.mp3", "voice_id": "voice1", "seed": 5,
            "voice_settings": {"stability": 0.5}, "enable_logging": False}
    from_jsonl = parse_manifest(json.dumps(line).encode(), "a.jsonl").entries[0]
    csv_text = ("input,output,voice_id,seed,voice_settings.stability,enable_logging\n"
                "s3://in-bucket/a.wav,s3://out-bucket/a.mp3,voice1,5,0.5,no\n")
    from_csv = parse_manifest(csv_text.encode(), "a.csv").entries[0]
    assert from_jsonl.job == from_csv.job
    # the id hashes the job's definition; a changed value here means every earlier run would be redone
    assert from_jsonl.job_id == from_csv.job_id == "af880ff71a0f8abc325c7944"


def test_outputs_derive_from_the_prefix_and_a_given_output_wins() -> None:
    data = (b'{"input": "s3://in-bucket/a.wav", "voice_id": "voice1", "output_format": "pcm_16000"}\n'
            b'{"input": "s3://in-bucket/a.wav", "voice_id": "voice1", "output": "s3://out-bucket/mine.mp3"}\n')
    with_slash = parse_manifest(data, "a.jsonl", output_prefix="s3://out-bucket/derived/")
    without = parse_manifest(data, "a.jsonl", output_prefix="s3://out-bucket/derived")
    assert with_slash.problems == without.problems == []
    derived, given = with_slash.entries
    assert derived.job_id == "7760636eb01da5ad728cc63f"
    assert derived.output == "s3://out-bucket/derived/7760636eb01da5ad728cc63f.pcm"
    assert [entry.output for entry in without.entries] == [derived.output, "s3://out-bucket/mine.mp3"]
    other_prefix = parse_manifest(data, "a.jsonl", output_prefix="s3://out-bucket/elsewhere").entries
    assert other_prefix[0].job_id != derived.job_id
    assert other_prefix[1].job_id == given.job_id


@pytest.mark.parametrize("name", ["retry.jsonl", "retry.csv"])
def test_write_manifest_round_trips(tmp_path: Path, name: str) -> None:
    lines = [
        {"input": "s3://in-bucket/a.wav", "output": "s3://out-bucket/a, with comma.mp3", "voice_id": "v1",
         "seed": 4294967295, "voice_settings": {"stability": 0.5, "use_speaker_boost": True}, "enable_logging": False,
         "metadata": {"title": "Quotes \"and\" ünïcode", "n": [1, 2]}, "max_segment_seconds": 60.5},
        {"input": "s3://in-bucket/b.wav", "output": "s3://out-bucket/b.pcm", "voice_id": "v2",
         "output_format": "pcm_16000", "model_id": "eleven_multilingual_sts_v2", "id": "0042"},
    ]
    path = tmp_path / name
    write_manifest(path, lines)
    shard = load_manifest(path)
    assert shard.problems == []
    assert [entry.raw for entry in shard.entries] == lines
    assert list(tmp_path.iterdir()) == [path]


def test_write_manifest_refuses_what_would_not_read_back(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="unknown manifest fields: voice"):
        write_manifest(tmp_path / "a.csv", [{"input": "s3://in-bucket/a.wav", "voice": "v1"}])
    with pytest.raises(ManifestError, match="line break"):
        write_manifest(tmp_path / "a.csv", [{"input": "s3://in-bucket/a.wav", "id": "two\nlines"}])
    with pytest.raises(ManifestError, match=".jsonl or .csv"):
        write_manifest(tmp_path / "a.txt", [])


def test_format_comes_from_the_suffix_unless_given() -> None:
    line = b'{"input": "s3://in-bucket/a.wav", "voice_id": "v1", "output": "s3://out-bucket/a.mp3"}\n'
    assert len(parse_manifest(line, "a.ndjson").entries) == 1
    assert len(parse_manifest(line, "A.JSON").entries) == 1
    assert len(parse_manifest(line, "manifest", fmt="jsonl").entries) == 1
    with pytest.raises(ManifestError, match="unknown manifest format 'xml'"):
        parse_manifest(line, "a.jsonl", fmt="xml")
    unknown = parse_manifest(line, "a.txt")
    assert unknown.problems == [ManifestProblem("a.txt", 0, "(file)", "cannot tell the manifest format from the "
                                                "file name; name it .jsonl or .csv")]


def test_shard_records_its_bytes_hash() -> None:
    line = b'{"input": "s3://in-bucket/a.wav", "voice_id": "v1", "output": "s3://out-bucket/a.mp3"}\n'
    assert parse_manifest(line, "a.jsonl").text_sha256 == hashlib.sha256(line).hexdigest()


def test_limits_come_from_settings() -> None:
    settings = Settings(allowed_input_buckets="in-a, in-b", allowed_output_buckets="out-a")
    assert ManifestLimits.from_settings(settings) == ManifestLimits(("in-a", "in-b"), ("out-a",))


def test_a_bad_output_prefix_is_an_error() -> None:
    with pytest.raises(ManifestError, match="not a valid bucket name"):
        check_output_prefix("s3://Bad_Bucket/x")
    with pytest.raises(ManifestError, match="not an allowed output bucket"):
        check_output_prefix("s3://other-bucket/x", ManifestLimits(allowed_output_buckets=("out-bucket",)))
    with pytest.raises(ManifestError, match="must be an s3://"):
        parse_manifest(b"", "a.jsonl", output_prefix="/local/dir")
    check_output_prefix("s3://out-bucket")


def test_load_manifests_reads_every_file(tmp_path: Path) -> None:
    shards = load_manifests([EXAMPLES / "podcast.jsonl", EXAMPLES / "demo.jsonl"])
    assert [shard.name for shard in shards] == ["podcast.jsonl", "demo.jsonl"]
    assert all(shard.problems == [] for shard in shards)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifests([tmp_path / "missing.jsonl"])


def test_validate_cli_accepts_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STS_ALLOWED_INPUT_BUCKETS", raising=False)
    monkeypatch.delenv("STS_ALLOWED_OUTPUT_BUCKETS", raising=False)
    get_settings.cache_clear()
    paths = [str(EXAMPLES / name) for name in ("podcast.jsonl", "dataset.csv", "demo.jsonl")]
    result = CliRunner().invoke(main, ["validate", *paths, "--output-prefix", DATASET_PREFIX])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.output == "15 lines, 15 valid, 0 problems in 3 files\n"
