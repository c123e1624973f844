"""Fan-out lines: voice_ids × seeds expand to one job per combination, with the ids and outputs of single lines."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.config import Settings
from pipeline.manifest.load import Shard, load_manifests, parse_manifest
from pipeline.manifest.schema import manifest_line_schema
from pipeline.report.reconcile import reconcile
from pipeline.run.plan import make_plan
from pipeline.run.retry import retry_manifest_bytes
from pipeline.s3uri import S3Uri
from pipeline.storage.examples import example_identity, example_provenance
from pipeline.storage.memory import memory_storage
from pipeline.storage.records import commit

VOICES = ["BKkWQENix2VWeAv6YV5R", "AxUN8DXFT6JYQPLTV7j9", "vK7n2rg6OeynABb4ilbv", "xmXfcXc3zRgo3GlCx0pq"]
TEMPLATE = "s3://out-bucket/night/{voice_id}/{stem}-{seed}.{ext}"


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _shard(lines: list[dict[str, Any]], name: str = "night.jsonl", **kwargs: Any) -> Shard:
    return parse_manifest(_jsonl(lines), name, **kwargs)


def _clips(n: int = 3, **extra: Any) -> list[dict[str, Any]]:
    return [{"input": f"s3://in-bucket/clips/clip-{i}.pcm", "voice_ids": VOICES, "seeds": [1, 2],
             "output": TEMPLATE, "id": f"clip-{i}", **extra} for i in range(n)]


def test_three_clips_four_voices_two_seeds_make_24_jobs_with_distinct_outputs_and_ids() -> None:
    shard = _shard(_clips())
    assert shard.problems == []
    assert len(shard.entries) == 24 == len({e.output for e in shard.entries}) == len({e.job_id for e in shard.entries})
    first = shard.entries[0]
    assert first.output == f"s3://out-bucket/night/{VOICES[0]}/clip-0-1.mp3"
    assert first.variant == f"voice_id={VOICES[0]}, seed=1" and first.job.seed == 1


def test_an_expanded_job_has_the_id_of_the_equivalent_single_line() -> None:
    fanned = _shard(_clips(1))
    for entry in fanned.entries:
        single = _shard([{"input": entry.job.input, "voice_id": entry.job.voice_id, "seed": entry.job.seed,
                          "output": entry.output, "id": "clip-0"}]).entries[0]
        assert (single.job_id, single.output) == (entry.job_id, entry.output)


def test_a_derived_output_under_a_templated_prefix_keeps_the_single_line_id() -> None:
    prefix = "s3://out-bucket/night/{voice_id}"
    fanned = _shard([{"input": "s3://in-bucket/a.wav", "voice_ids": VOICES[:2]}], output_prefix=prefix)
    assert [e.output.rsplit("/", 2)[1] for e in fanned.entries] == VOICES[:2]
    single = _shard([{"input": "s3://in-bucket/a.wav", "voice_id": VOICES[1]}], output_prefix=prefix).entries[0]
    assert (single.job_id, single.output) == (fanned.entries[1].job_id, fanned.entries[1].output)


def test_a_template_without_the_voice_collides_and_names_both_combinations() -> None:
    shard = _shard([{"input": "s3://in-bucket/a.wav", "voice_ids": VOICES[:2], "output": "s3://out-bucket/{stem}.mp3"}])
    assert len(shard.entries) == 1
    [problem] = shard.problems
    text = str(problem)
    assert text.startswith("night.jsonl:1: output: voice_id=AxUN8DXFT6JYQPLTV7j9: same output")
    assert "night.jsonl:1 (voice_id=BKkWQENix2VWeAv6YV5R)" in text and "{voice_id}" in text


def test_collisions_across_shards_name_file_line_and_combination() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.jsonl", Path(tmp) / "b.jsonl"
        a.write_bytes(_jsonl(_clips(1)))
        b.write_bytes(_jsonl([{"input": "s3://in-bucket/other/clip-0.wav", "voice_id": VOICES[3], "seed": 2,
                               "output": TEMPLATE}]))
        first, second = load_manifests([a, b])
    assert first.problems == [] and second.entries == []
    assert f"same output as {a}:1 (voice_id={VOICES[3]}, seed=2)" in str(second.problems[0])


def test_bad_fanout_fields_are_reported_once_each() -> None:
    shard = _shard([
        {"input": "s3://in-bucket/a.wav", "voice_id": VOICES[0], "voice_ids": VOICES, "output": TEMPLATE},
        {"input": "s3://in-bucket/a.wav", "voice_ids": [], "output": TEMPLATE},
        {"input": "s3://in-bucket/a.wav", "voice_ids": ["ok", "not ok", "ok"], "output": TEMPLATE},
        {"input": "s3://in-bucket/a.wav", "voice_ids": VOICES, "seeds": [1, True], "output": TEMPLATE},
        {"input": "s3://in-bucket/a.wav", "voice_ids": VOICES, "output": TEMPLATE},
        {"input": "s3://in-bucket/a.wav", "voice_ids": VOICES, "output": "s3://out-bucket/{name}.mp3"},
        {"input": "s3://in-bucket/a.wav", "voice_ids": VOICES, "seeds": [1, 2], "model_id": "bad model",
         "output": TEMPLATE},
    ])
    assert shard.entries == []
    by_line = {p.line: [] for p in shard.problems}
    for problem in shard.problems:
        by_line[problem.line].append(f"{problem.field}: {problem.message}")
    assert "given together with voice_id" in by_line[1][0]
    assert "non-empty list" in by_line[2][0]
    assert "item 2 ('not ok')" in by_line[3][0] and 'lists "ok" more than once' in by_line[3][1]
    assert "seeds: item 2 (True)" in by_line[4][0]
    assert "uses {seed}, which this line cannot fill" in by_line[5][0]
    assert "unknown placeholder {name}" in by_line[6][0]
    assert len(by_line[7]) == 1 and by_line[7][0].startswith("model_id")  # once, not once per combination


def test_the_schema_takes_fanout_lines_and_refuses_both_forms() -> None:
    validator = Draft202012Validator(manifest_line_schema())
    assert validator.is_valid(_clips(1)[0])
    assert not validator.is_valid({**_clips(1)[0], "voice_id": VOICES[0]})
    assert not validator.is_valid({**_clips(1)[0], "seed": 3})
    assert not validator.is_valid({"input": "s3://in-bucket/a.wav", "output": TEMPLATE})


def test_csv_rows_fan_out_from_json_arrays_or_semicolons() -> None:
    data = (f"input,voice_ids,seeds,output\n"
            f"s3://in-bucket/a.wav,{VOICES[0]};{VOICES[1]},\"[1,2]\",{TEMPLATE}\n").encode()
    shard = parse_manifest(data, "night.csv")
    assert shard.problems == [] and len(shard.entries) == 4
    assert {e.job.seed for e in shard.entries} == {1, 2}


def test_retry_of_one_failed_combination_writes_only_that_combination() -> None:
    shard = _shard(_clips(1))
    report = reconcile(memory_storage("in-bucket", "out-bucket"), [shard], fetch_records=False)
    [missing] = [r for r in report.results if r.entry.job.voice_id == VOICES[2] and r.entry.job.seed == 2]
    assert missing.where == f"night.jsonl:1 (voice_id={VOICES[2]}, seed=2)"  # the report names the combination
    data = retry_manifest_bytes([missing])["night.jsonl"]
    [line] = [json.loads(text) for text in data.decode().splitlines()]
    assert "voice_ids" not in line and "seeds" not in line and line["voice_id"] == VOICES[2] and line["seed"] == 2
    [again] = _shard([line]).entries
    assert (again.job_id, again.output) == (missing.entry.job_id, missing.entry.output)


def test_plan_counts_every_combination_and_bills_each_input_per_voice_and_seed() -> None:
    storage = memory_storage("in-bucket", "out-bucket")
    for i in range(3):
        storage.put_bytes(S3Uri("in-bucket", f"clips/clip-{i}.pcm"), b"\0\0" * 16000)  # 1 s of raw PCM each
    shard = _shard(_clips())
    done = S3Uri.parse(shard.entries[0].output)
    storage.put_bytes(done, b"ID3audio")
    commit(storage, done, example_provenance(example_identity(output_uri=str(done)), credits=16.7, duration_s=1.0))
    plan = make_plan(storage, [shard], Settings(), concurrency=2)
    assert (plan.jobs, plan.skipped, plan.to_run) == (24, 1, 23)
    assert plan.audio_seconds == 23.0
    rate = plan.credits_per_second  # learned from the one committed job
    credits = plan.shards[0].credits_by_line
    assert credits[1] == pytest.approx(7 * rate) and credits[2] == pytest.approx(8 * rate)  # per voice × seed
