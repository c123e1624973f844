"""The committed JSON Schema is the generator's output, and it agrees with the loader on the examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.manifest.fanout import FANOUT_FIELDS
from pipeline.manifest.job import Job, MasterTarget, VoiceSettings
from pipeline.manifest.load import load_manifest
from pipeline.manifest.schema import DESCRIPTIONS, manifest_line_schema, render_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "manifests" / "schema.json"
EXAMPLES = sorted((ROOT / "manifests" / "examples").iterdir())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_committed_schema_is_what_the_generator_produces() -> None:
    # regenerate with: python -m pipeline.manifest.schema > manifests/schema.json
    assert SCHEMA_PATH.read_text() == render_schema()


def test_every_field_has_a_description_and_no_description_is_stale() -> None:
    fields = set(Job.model_fields) | {f"voice_settings.{name}" for name in VoiceSettings.model_fields} | \
        {f"master.{name}" for name in MasterTarget.model_fields}
    assert set(DESCRIPTIONS) == fields | set(FANOUT_FIELDS)
    schema = manifest_line_schema()
    assert set(schema["properties"]) == set(Job.model_fields) | set(FANOUT_FIELDS)
    assert all(spec["description"] for spec in schema["properties"].values())


def test_examples_exist() -> None:
    assert [path.name for path in EXAMPLES] == ["dataset.csv", "demo.jsonl", "podcast.jsonl"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_line_validates_against_the_schema_and_the_loader(
        path: Path, validator: Draft202012Validator) -> None:
    shard = load_manifest(path, output_prefix="s3://voice-datasets/converted")
    assert shard.problems == []
    assert len(shard.entries) == shard.line_count > 0
    for entry in shard.entries:
        errors = [error.message for error in validator.iter_errors(entry.raw)]
        assert errors == [], f"{path.name}:{entry.line}"


@pytest.mark.parametrize("line", [
    {"input": "s3://in-bucket/a.wav"},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "seed": -1},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "seed": "3"},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "output_format": "mp3"},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "model_id": "eleven multilingual v2"},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "voice_settings": {"speed": 2.0}},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "voice_settings": {"stabilty": 0.5}},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v b"},
    {"input": "/local/a.wav", "voice_id": "v"},
    {"input": "s3://in-bucket/a.wav", "voice_id": "v", "colour": "red"},
])
def test_schema_rejects_what_the_model_rejects(line: dict[str, Any], validator: Draft202012Validator) -> None:
    assert not validator.is_valid(line)
    with pytest.raises(ValueError):
        Job.model_validate(line)


def test_schema_and_loader_agree_on_master(validator: Draft202012Validator) -> None:
    base = {"input": "s3://b-in/a.mp3", "voice_id": "BKkWQENix2VWeAv6YV5R", "copy_tags": True}
    for master in ("podcast", {"lufs": -16, "true_peak_db": -1.0}, {"lufs": -16.5}):
        line = {**base, "master": master}
        assert not list(validator.iter_errors(line)) and Job.model_validate(line).master is not None
    for master in ("loud", {"lufs": -3}, {"lufs": -16, "ceiling": -1}):
        line = {**base, "master": master}
        assert list(validator.iter_errors(line))
        with pytest.raises(ValueError):
            Job.model_validate(line)
    plain = Job.model_validate(base)
    assert plain.job_id("s3://o/p") != Job.model_validate({**base, "master": "podcast"}).job_id("s3://o/p")
