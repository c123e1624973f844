"""Outputs that land on the pipeline's own keys, or on keys too long for them, are refused by validate as FILE:LINE.

The pipeline writes ``K.provenance.json``, ``K.failure.json`` and ``K.work/...`` beside every output ``K``, and keeps
each run's manifests under the runs prefix. An output on one of those keys, or one whose records would pass S3's
1,024-byte key limit, is a problem of its line; when it is another line's key, the problem names that line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import Settings, get_settings
from pipeline.keys import LONGEST_DERIVED_SUFFIX, MAX_KEY_BYTES
from pipeline.manifest.csv import render_csv
from pipeline.manifest.job import Job
from pipeline.manifest.keys import MAX_OUTPUT_KEY_BYTES, output_key_problems
from pipeline.manifest.load import ManifestLimits, Shard, load_manifests, parse_manifest
from pipeline.s3uri import S3Uri

OUT = "s3://out-bucket"


def line(n: int, output: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"input": f"s3://in-bucket/clip-{n}.wav", "voice_id": "voice1",
            "output": output if output is not None else f"{OUT}/clip-{n}.mp3", **fields}


def shard(*lines: dict[str, Any], name: str = "m.jsonl", limits: ManifestLimits | None = None) -> Shard:
    data = "".join(json.dumps(item) + "\n" for item in lines).encode()
    return parse_manifest(data, name, limits=limits)


def problems_of(result: Shard) -> list[str]:
    return [str(problem) for problem in result.problems]


@pytest.mark.parametrize(("suffix", "kind", "consequence"), [
    (".provenance.json", "provenance record", "would count as done without being converted"),
    (".failure.json", "failure record", "success would delete it"),
])
def test_an_output_on_another_jobs_record_names_that_line(suffix: str, kind: str, consequence: str) -> None:
    result = shard(line(1), line(2), line(3, f"{OUT}/clip-1.mp3{suffix}"))
    assert [e.line for e in result.entries] == [1, 2]
    [problem] = problems_of(result)
    assert problem.startswith(f"m.jsonl:3: output: is the {kind} of the job at m.jsonl:1 ({OUT}/clip-1.mp3)")
    assert consequence in problem


def test_an_output_under_another_jobs_work_prefix_names_that_line() -> None:
    result = shard(line(1, f"{OUT}/long.mp3.work/seg-0001.pcm_44100"), line(2, f"{OUT}/long.mp3"))
    assert [e.line for e in result.entries] == [2]
    [problem] = problems_of(result)
    assert problem.startswith(f"m.jsonl:1: output: lies under the work prefix of the job at m.jsonl:2 "
                              f"({OUT}/long.mp3.work/)")


def test_a_collision_across_shards_names_the_other_file(tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    second = tmp_path / "second.jsonl"
    first.write_text(json.dumps(line(1)) + "\n")
    second.write_text(json.dumps(line(2, f"{OUT}/clip-1.mp3.provenance.json")) + "\n")
    shards = load_manifests([first, second])
    assert len(shards[0].entries) == 1 and not shards[1].entries
    [problem] = problems_of(shards[1])
    assert problem.startswith(f"{second}:1: output: is the provenance record of the job at {first}:1 ")


@pytest.mark.parametrize(("output", "phrase"), [
    (f"{OUT}/a.mp3.provenance.json", "ends in '.provenance.json'"),
    (f"{OUT}/a.mp3.failure.json", "ends in '.failure.json'"),
    (f"{OUT}/a.mp3.work/seg-0000.pcm_44100", "contains '.work/'"),
    (f"{OUT}/x.work/y.mp3", "contains '.work/'"),
    (f"{OUT}/sts-runs/run-1/manifests/m.jsonl", f"lies under the runs prefix {OUT}/sts-runs/"),
])
def test_an_output_on_a_reserved_key_is_refused_alone(output: str, phrase: str) -> None:
    result = shard(line(1), line(2, output), line(3))
    assert [e.line for e in result.entries] == [1, 3]
    [problem] = problems_of(result)
    assert problem.startswith(f"m.jsonl:2: output: {phrase}")
    assert "choose" in problem or "write outputs elsewhere" in problem


def test_the_runs_prefix_is_the_configured_one() -> None:
    limits = ManifestLimits(runs_uri="s3://runs-bucket/archive/runs")
    result = shard(line(1, "s3://runs-bucket/archive/runs/run-1/run.json"), line(2, f"{OUT}/sts-runs/fine.mp3"),
                   line(3, "s3://runs-bucket/archive/runs-not/fine.mp3"), limits=limits)
    assert [e.line for e in result.entries] == [2, 3]
    [problem] = problems_of(result)
    assert "lies under the runs prefix s3://runs-bucket/archive/runs/" in problem


def test_limits_carry_the_runs_uri_from_settings() -> None:
    assert ManifestLimits.from_settings(Settings(runs_uri="s3://r/runs")).runs_uri == "s3://r/runs"


def test_an_output_whose_records_would_pass_the_key_limit_is_refused() -> None:
    assert MAX_OUTPUT_KEY_BYTES == MAX_KEY_BYTES - len(LONGEST_DERIVED_SUFFIX)
    assert LONGEST_DERIVED_SUFFIX.startswith(".work/seg-9999.pcm_") and len(LONGEST_DERIVED_SUFFIX) == 24
    fits = "k" * (MAX_OUTPUT_KEY_BYTES - 4) + ".mp3"
    over = "k" * (1020 - 4) + ".mp3"  # fits S3 itself; its .provenance.json would not
    result = shard(line(1, f"{OUT}/{fits}"), line(2, f"{OUT}/{over}"))
    assert [e.line for e in result.entries] == [1]
    [problem] = problems_of(result)
    assert problem.startswith("m.jsonl:2: output: the key is 1,020 bytes (UTF-8)")
    assert f"shorten it to at most {MAX_OUTPUT_KEY_BYTES:,} bytes" in problem


def test_the_key_limit_counts_utf8_bytes_not_characters() -> None:
    key = "ü" * (MAX_OUTPUT_KEY_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    [problem] = output_key_problems(S3Uri("b", key))
    assert problem.reason == "key_too_long"


def test_a_line_with_other_problems_also_shows_its_key_problem() -> None:
    result = shard(line(1, f"{OUT}/a.mp3.failure.json", seed=-1))
    assert {p.field for p in result.problems} == {"seed", "output"}


def test_outputs_derived_from_a_prefix_are_checked_too() -> None:
    data = (json.dumps({"input": "s3://in-bucket/a.wav", "voice_id": "voice1"}) + "\n").encode()
    result = parse_manifest(data, "m.jsonl", output_prefix=f"{OUT}/sts-runs/outputs")
    assert not result.entries
    assert "lies under the runs prefix" in problems_of(result)[0]


def test_validate_prints_each_refusal_as_file_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STS_RUNS_URI", "STS_ALLOWED_INPUT_BUCKETS", "STS_ALLOWED_OUTPUT_BUCKETS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(item) + "\n" for item in (
        line(1), line(2, f"{OUT}/clip-1.mp3.provenance.json"), line(3, f"{OUT}/clip-1.mp3.failure.json"),
        line(4, f"{OUT}/clip-1.mp3.work/seg-0000.pcm_44100"), line(5, "s3://in-bucket/clip-1.wav"),
        line(6, f"{OUT}/" + "k" * 1016 + ".mp3"))))
    result = CliRunner().invoke(main, ["validate", str(manifest)])
    get_settings.cache_clear()
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:5] == [
        f"{manifest}:2: output: is the provenance record of the job at {manifest}:1 ({OUT}/clip-1.mp3); that job "
        "would count as done without being converted: choose another key",
        f"{manifest}:3: output: is the failure record of the job at {manifest}:1 ({OUT}/clip-1.mp3); that job's "
        "success would delete it: choose another key",
        f"{manifest}:4: output: lies under the work prefix of the job at {manifest}:1 ({OUT}/clip-1.mp3.work/), "
        "where that job keeps its segment checkpoints: it would be stitched in as a segment or deleted when that job "
        "finishes; choose another key",
        f"{manifest}:5: output: is the input of {manifest}:1; this job would overwrite that job's source",
        f"{manifest}:6: output: the key is 1,020 bytes (UTF-8); the pipeline writes keys up to 24 bytes longer beside "
        f"it (K{LONGEST_DERIVED_SUFFIX}) and S3 takes at most 1,024, so shorten it to at most 1,000 bytes",
    ]
    assert lines[5] == "6 lines, 1 valid, 5 problems in 1 file"


# --- overwrite: a line may allow replacing a foreign object at its output

def test_overwrite_is_a_boolean_field_outside_the_job_id() -> None:
    plain, allowed = Job(**line(1)), Job(**line(1, overwrite=True))
    assert allowed.overwrite and not plain.overwrite
    assert plain.job_id() == allowed.job_id()
    result = shard(line(1, overwrite="yes"))
    assert problems_of(result) == ["m.jsonl:1: overwrite: must be true or false (unquoted JSON booleans), got the "
                                   "string \"yes\""]


def test_overwrite_reads_from_a_csv_column() -> None:
    text = render_csv([line(1, overwrite=True), line(2)])
    assert text.splitlines()[0] == "input,output,voice_id,overwrite"
    result = parse_manifest(text.encode(), "m.csv")
    assert [e.job.overwrite for e in result.entries] == [True, False]


# --- what a manifest says is printed without its control characters acting

def test_problems_print_escape_sequences_escaped() -> None:
    result = shard({**line(1), "\x1b[2J\x1b[31mevil\x1b[0m": 1, "note\rforged": 2})
    text = "\n".join(problems_of(result))
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2J\\x1b[31mevil\\x1b[0m: unknown field" in text
    assert "note\\x0dforged" in text
