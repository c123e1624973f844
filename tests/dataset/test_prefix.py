"""from-prefix over the in-memory S3: deterministic shards that validate, filters, non-audio left out, flat memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.dataset.prefix import PrefixOptions, write_prefix_shards
from pipeline.errors import ManifestError
from pipeline.manifest.load import load_manifests
from pipeline.s3uri import S3Uri
from pipeline.storage.memory import MemoryS3
from pipeline.storage.s3 import Storage

VOICES = ("BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9")
KEYS = ["clips/a.wav", "clips/b.mp3", "clips/b.wav", "clips/notes.txt", "clips/sub/c.flac", "clips/sub/skip.wav",
        "clips/", "clips-old/d.wav", "clips/cover.jpg"]


def _storage(keys: list[str] = KEYS) -> Storage:
    s3 = MemoryS3()
    s3.create_bucket(Bucket="in-bucket")
    s3.create_bucket(Bucket="out-bucket")
    s3.seed("in-bucket", [(key, b"" if key.endswith("/") else b"RIFF....") for key in keys])
    return Storage(s3)


def _options(**kwargs: object) -> PrefixOptions:
    defaults: dict[str, object] = {"voices": VOICES, "seeds": (1, 2), "output_prefix": "s3://out-bucket/night"}
    return PrefixOptions(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_shards_validate_fan_out_and_are_byte_identical_for_the_same_listing(tmp_path: Path) -> None:
    storage = _storage()
    first = write_prefix_shards(storage, S3Uri("in-bucket", "clips"), _options(shard_size=2), tmp_path / "a")
    again = write_prefix_shards(storage, S3Uri("in-bucket", "clips/"), _options(shard_size=2), tmp_path / "b")
    assert (first.lines, first.jobs, first.not_audio, len(first.shards)) == (5, 20, 2, 3)
    assert [p.read_bytes() for p in first.shards] == [p.read_bytes() for p in again.shards]
    shards = load_manifests(first.shards)
    assert [p for s in shards for p in s.problems] == []
    entries = [e for s in shards for e in s.entries]
    assert len(entries) == 20 == len({e.output for e in entries})
    assert entries[0].output == f"s3://out-bucket/night/{VOICES[0]}/a.wav.1.mp3"
    assert entries[0].job.id == "a.wav" and not any("clips-old" in e.job.input for e in entries)


def test_include_and_exclude_globs_apply_to_the_key_under_the_prefix(tmp_path: Path) -> None:
    result = write_prefix_shards(_storage(), S3Uri("in-bucket", "clips"),
                                 _options(include=("*.wav", "sub/*"), exclude=("*skip*",)), tmp_path)
    lines = [line for path in result.shards for line in path.read_text().splitlines()]
    assert [line.split('"input":"')[1].split('"')[0] for line in lines] == [
        "s3://in-bucket/clips/a.wav", "s3://in-bucket/clips/b.wav", "s3://in-bucket/clips/sub/c.flac"]
    assert result.filtered == 2


def test_one_voice_and_no_seed_write_single_lines_and_stale_shards_go(tmp_path: Path) -> None:
    write_prefix_shards(_storage(), S3Uri("in-bucket", "clips"), _options(shard_size=1), tmp_path)
    result = write_prefix_shards(_storage(["clips/a.wav"]), S3Uri("in-bucket", "clips"),
                                 _options(voices=VOICES[:1], seeds=()), tmp_path)
    assert [p.name for p in sorted(tmp_path.glob("*.jsonl"))] == ["prefix-00000.jsonl"]
    assert len(result.removed) == 4
    [entry] = load_manifests(result.shards)[0].entries
    assert entry.output == f"s3://out-bucket/night/{VOICES[0]}/a.wav.mp3" and entry.variant == ""


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"voices": ()}, "at least one --voice"),
    ({"voices": ("not a voice",)}, "voice_id"),
    ({"output_format": "mp3"}, "unknown output_format .mp3."),
    ({"output_prefix": "s3://in-bucket/clips/out"}, "next listing would take"),
])
def test_bad_options_are_refused_before_listing(kwargs: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=message):
        write_prefix_shards(_storage(), S3Uri("in-bucket", "clips"), _options(**kwargs), tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_command_writes_shards_validate_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main

    storage = _storage()
    monkeypatch.setattr("pipeline.storage.s3.Storage.from_settings", classmethod(lambda cls, settings: storage))
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["manifest", "from-prefix", "s3://in-bucket/clips/", "--voice", VOICES[0],
                                       "--voice", VOICES[1], "--seed", "7", "--output-prefix", "s3://out-bucket/n",
                                       "--include", "*.wav", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 clips, 6 jobs in 1 shard(s)" in result.output
    checked = CliRunner().invoke(main, ["validate", str(out / "prefix-00000.jsonl")])
    assert checked.exit_code == 0, checked.output
