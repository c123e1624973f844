"""Hostile manifests: each bad line gives exactly one precise problem, and the good lines beside it still load.

Most cases put the bad line between two good ones (lines 1 and 3), so a test also proves the bad line hides nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import get_settings
from pipeline.manifest.load import ManifestLimits, Shard, load_manifests, parse_manifest


def good(n: int) -> dict[str, Any]:
    return {"input": f"s3://in-bucket/clip-{n}.wav", "voice_id": "voice1", "output": f"s3://out-bucket/clip-{n}.mp3"}


def bad(**changes: Any) -> dict[str, Any]:
    """A good line 2 with some fields changed (``None`` removes a field)."""
    line = {**good(2), **changes}
    return {key: value for key, value in line.items() if value is not None}


def sandwich(middle: dict[str, Any] | bytes) -> bytes:
    body = middle if isinstance(middle, bytes) else json.dumps(middle).encode()
    return json.dumps(good(1)).encode() + b"\n" + body + b"\n" + json.dumps(good(3)).encode() + b"\n"


def only_problem(shard: Shard, line: int, field: str, phrase: str, valid: list[int]) -> None:
    assert len(shard.problems) == 1, [str(problem) for problem in shard.problems]
    problem = shard.problems[0]
    assert (problem.file, problem.line, problem.field) == (shard.label, line, field), str(problem)
    assert phrase in problem.message, str(problem)
    assert [entry.line for entry in shard.entries] == valid


def check_line(middle: dict[str, Any] | bytes, field: str, phrase: str, **kwargs: Any) -> None:
    only_problem(parse_manifest(sandwich(middle), "m.jsonl", **kwargs), 2, field, phrase, [1, 3])


# --- JSON syntax and shape

def test_malformed_json_names_the_column() -> None:
    check_line(b'{"input": "s3://in-bucket/x.wav" "voice_id": "v"}', "(line)",
               "invalid JSON at column 34: Expecting ',' delimiter")


def test_a_json_array_is_not_a_job() -> None:
    check_line(b'["s3://in-bucket/x.wav", "voice1"]', "(line)", "must be one JSON object {...}, got an array")


def test_a_truncated_line_is_reported_as_cut_short() -> None:
    check_line(b'{"input": "s3://in-bucket/x.wav", "voice_id": "voi', "(line)", "cut short")


def test_two_objects_on_one_line() -> None:
    check_line(json.dumps(bad()).encode() + b" {}", "(line)", "put one object on each line")


def test_nan_is_not_json() -> None:
    check_line(b'{"input": "s3://in-bucket/x.wav", "voice_id": "v", "output": "s3://out-bucket/x", "seed": NaN}',
               "(line)", "NaN is not a JSON number")


def test_a_repeated_key_is_reported() -> None:
    check_line(b'{"input": "s3://in-bucket/x.wav", "voice_id": "a", "voice_id": "b", "output": "s3://out-bucket/x"}',
               "voice_id", "given more than once")


# --- types

def test_seed_as_a_string() -> None:
    check_line(bad(seed="3"), "seed", 'must be a whole number, got the string "3"')


def test_seed_as_a_boolean() -> None:
    check_line(bad(seed=True), "seed", "must be a whole number, got true")


def test_voice_settings_as_a_string() -> None:
    check_line(bad(voice_settings="stable"), "voice_settings", 'must be a JSON object, got the string "stable"')


def test_stability_as_a_word() -> None:
    check_line(bad(voice_settings={"stability": "high"}), "voice_settings.stability",
               'must be a number, got the string "high"')


def test_a_quoted_boolean_in_jsonl() -> None:
    check_line(bad(enable_logging="yes"), "enable_logging", 'must be true or false (unquoted JSON booleans)')


# --- ranges

@pytest.mark.parametrize(("changes", "field", "phrase"), [
    ({"seed": -1}, "seed", "must be between 0 and 4294967295, got -1"),
    ({"seed": 2**32}, "seed", "must be between 0 and 4294967295, got 4294967296"),
    ({"voice_settings": {"stability": 1.5}}, "voice_settings.stability", "must be between 0 and 1, got 1.5"),
    ({"voice_settings": {"speed": 2.0}}, "voice_settings.speed", "must be between 0.7 and 1.2, got 2.0"),
    ({"optimize_streaming_latency": 9}, "optimize_streaming_latency", "must be between 0 and 4, got 9"),
    ({"max_segment_seconds": 5}, "max_segment_seconds", "must be between 10 and 300, got 5"),
    ({"id": "x" * 201}, "id", "at most 200 characters, got 201"),
])
def test_out_of_range(changes: dict[str, Any], field: str, phrase: str) -> None:
    check_line(bad(**changes), field, phrase)


# --- enums and names

def test_unknown_output_format() -> None:
    check_line(bad(output_format="mp3_44100_129"), "output_format", "unknown output_format 'mp3_44100_129'")


def test_unknown_file_format() -> None:
    check_line(bad(file_format="wav"), "file_format", "unknown file_format 'wav'; one of: pcm_s16le_16, other")


def test_a_model_id_of_the_wrong_shape_names_the_sts_models() -> None:
    # any well-formed id passes offline (the account says which can do voice conversion: validate --remote)
    check_line(bad(model_id="eleven multilingual v2"), "model_id", "eleven_multilingual_sts_v2")


def test_unknown_field_suggests_the_closest_name() -> None:
    check_line(bad(outptu_format="pcm_16000"), "outptu_format", "unknown field; did you mean 'output_format'?")


def test_unknown_voice_settings_field() -> None:
    check_line(bad(voice_settings={"stabilty": 0.5}), "voice_settings.stabilty",
               "unknown field; did you mean 'stability'?")


def test_bad_voice_id() -> None:
    check_line(bad(voice_id="my voice"), "voice_id", "1-64 letters, digits")


def test_missing_voice_id() -> None:
    check_line(bad(voice_id=None), "voice_id", "is required but missing")


def test_missing_output_without_prefix() -> None:
    check_line(bad(output=None), "output", "pass an output prefix (--output-prefix")


# --- S3 URIs

def test_dot_dot_in_output_key() -> None:
    check_line(bad(output="s3://out-bucket/a/../b.mp3"), "output", "must not contain '.' or '..' path segments")


def test_absolute_output_key() -> None:
    check_line(bad(output="s3://out-bucket//x.mp3"), "output", "must not start with '/'")


def test_control_character_in_key() -> None:
    check_line(bad(output="s3://out-bucket/a\tb.mp3"), "output", "control characters")


def test_bad_bucket_name() -> None:
    check_line(bad(input="s3://In_Bucket/x.wav"), "input", "'In_Bucket' is not a valid bucket name")


def test_input_not_s3() -> None:
    check_line(bad(input="/data/clip.wav"), "input", "must be an s3://bucket/key URI, got '/data/clip.wav'")


def test_output_names_a_folder() -> None:
    check_line(bad(output="s3://out-bucket/converted/"), "output", "names a folder")


def test_output_bucket_not_allowed() -> None:
    limits = ManifestLimits(allowed_output_buckets=("out-bucket",))
    check_line(bad(output="s3://elsewhere/x.mp3"), "output",
               "bucket 'elsewhere' is not an allowed output bucket (out-bucket)", limits=limits)


def test_input_bucket_not_allowed() -> None:
    limits = ManifestLimits(allowed_input_buckets=("in-bucket",))
    check_line(bad(input="s3://private-bucket/x.wav"), "input", "STS_ALLOWED_INPUT_BUCKETS", limits=limits)


def test_output_equal_to_input() -> None:
    check_line(bad(output="s3://in-bucket/clip-2.wav"), "output", "is the same as the input")


def test_output_equal_to_input_is_reported_beside_other_problems() -> None:
    shard = parse_manifest(sandwich(bad(output="s3://in-bucket/clip-2.wav", seed=-1)), "m.jsonl")
    assert [(p.line, p.field) for p in shard.problems] == [(2, "seed"), (2, "output")]
    assert [entry.line for entry in shard.entries] == [1, 3]


def test_every_problem_of_a_line_is_reported() -> None:
    shard = parse_manifest(sandwich(bad(seed="3", file_format="wav", colour="red", voice_id=None)), "m.jsonl")
    assert [(p.line, p.field) for p in shard.problems] == [
        (2, "voice_id"), (2, "seed"), (2, "file_format"), (2, "colour")]


# --- across lines and shards

def test_duplicate_outputs_within_a_shard() -> None:
    data = sandwich(bad(output=good(1)["output"]))
    only_problem(parse_manifest(data, "m.jsonl"), 2, "output", "same output as m.jsonl:1", [1, 3])


def test_duplicate_outputs_across_shards(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(good(1)) + "\n")
    (tmp_path / "b.jsonl").write_bytes(sandwich(bad(output=good(1)["output"])).replace(b"clip-1", b"clip-9", 2))
    first, second = load_manifests([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert first.problems == [] and len(first.entries) == 1
    only_problem(second, 2, "output", f"same output as {tmp_path / 'a.jsonl'}:1", [1, 3])


def test_output_over_another_jobs_input(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(good(1)) + "\n")
    (tmp_path / "b.jsonl").write_bytes(sandwich(bad(output=good(1)["input"])).replace(b"clip-1", b"clip-9", 2))
    second = load_manifests([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])[1]
    only_problem(second, 2, "output", f"is the input of {tmp_path / 'a.jsonl'}:1", [1, 3])


def test_two_shards_with_one_name(tmp_path: Path) -> None:
    for folder, n in (("x", 1), ("y", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "jobs.jsonl").write_text(json.dumps(good(n)) + "\n")
    first, second = load_manifests([tmp_path / "x" / "jobs.jsonl", tmp_path / "y" / "jobs.jsonl"])
    assert len(first.entries) == 1
    only_problem(second, 0, "(file)", f"same name ({tmp_path / 'x' / 'jobs.jsonl'})", [])


# --- bytes

def test_a_huge_line_is_not_parsed() -> None:
    huge = json.dumps(bad(metadata={"notes": "x" * 70_000})).encode()
    check_line(huge, "(line)", f"line is {len(huge)} bytes, over the limit of 65536")


def test_a_smaller_line_limit() -> None:
    limits = ManifestLimits(max_line_bytes=150)
    check_line(bad(metadata={"notes": "x" * 100}), "(line)", "over the limit of 150", limits=limits)


def test_non_utf8_bytes_spoil_only_their_line() -> None:
    check_line(b'{"input": "s3://in-bucket/caf\xe9.wav", "voice_id": "v"}', "(line)",
               "not valid UTF-8 (byte 0xe9 at byte 30 of the line)")


def test_a_utf8_bom_is_accepted() -> None:
    shard = parse_manifest(b"\xef\xbb\xbf" + sandwich(bad()), "m.jsonl")
    assert shard.problems == []
    assert [entry.line for entry in shard.entries] == [1, 2, 3]


def test_crlf_line_ends_are_accepted() -> None:
    shard = parse_manifest(sandwich(bad()).replace(b"\n", b"\r\n"), "m.jsonl")
    assert shard.problems == []
    assert [entry.line for entry in shard.entries] == [1, 2, 3]
    csv_shard = parse_manifest(b"input,voice_id,output\r\ns3://in-bucket/a.wav,v1,s3://out-bucket/a.mp3\r\n", "m.csv")
    assert csv_shard.problems == [] and len(csv_shard.entries) == 1


def test_blank_lines_keep_the_numbering() -> None:
    data = json.dumps(good(1)).encode() + b"\n\n   \n" + json.dumps(bad(seed=-1)).encode() + b"\n"
    only_problem(parse_manifest(data, "m.jsonl"), 4, "seed", "between 0 and", [1])


def test_an_empty_file() -> None:
    only_problem(parse_manifest(b"", "m.jsonl"), 0, "(file)", "the file is empty", [])


def test_a_utf16_file() -> None:
    data = "\ufeff" + json.dumps(good(1)) + "\n"
    only_problem(parse_manifest(data.encode("utf-16"), "m.jsonl"), 0, "(file)", "UTF-16; save it as UTF-8", [])


# --- CSV

CSV_HEADER = "input,voice_id,output,seed\n"


def csv_sandwich(row: str, header: str = CSV_HEADER) -> bytes:
    return (header + "s3://in-bucket/1.wav,v1,s3://out-bucket/1.mp3,1\n" + row + "\n"
            + "s3://in-bucket/3.wav,v1,s3://out-bucket/3.mp3,3\n").encode()


def test_csv_ragged_row() -> None:
    only_problem(parse_manifest(csv_sandwich("s3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,2,extra"), "m.csv"),
                 3, "(line)", "row has 5 cells but the header has 4 columns", [2, 4])


def test_csv_unknown_column_is_reported_once_at_the_header() -> None:
    header = "input,voice_id,output,seeed\n"
    only_problem(parse_manifest(csv_sandwich("s3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,2", header), "m.csv"),
                 1, "seeed", "unknown column; did you mean 'seed'?", [2, 3, 4])


def test_csv_bad_bool() -> None:
    header = "input,voice_id,output,enable_logging\n"
    only_problem(parse_manifest(csv_sandwich("s3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,maybe", header)
                                .replace(b",1\n", b",true\n").replace(b",3\n", b",NO\n"), "m.csv"),
                 3, "enable_logging", "must be true or false (or 1/0, yes/no), got 'maybe'", [2, 4])


def test_csv_bad_whole_number() -> None:
    only_problem(parse_manifest(csv_sandwich("s3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,2.5"), "m.csv"),
                 3, "seed", "must be a whole number, got '2.5'", [2, 4])


def test_csv_range_is_checked_after_coercion() -> None:
    only_problem(parse_manifest(csv_sandwich("s3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,-1"), "m.csv"),
                 3, "seed", "must be between 0 and 4294967295, got -1", [2, 4])


def test_csv_bad_json_cell() -> None:
    header = "input,voice_id,output,voice_settings\n"
    row = 's3://in-bucket/2.wav,v1,s3://out-bucket/2.mp3,"{stability: 1}"'
    only_problem(parse_manifest(csv_sandwich(row, header).replace(b",1\n", b",\n").replace(b",3\n", b",\n"), "m.csv"),
                 3, "voice_settings", "must be a JSON object such as", [2, 4])


def test_csv_unclosed_quote_spoils_only_its_row() -> None:
    only_problem(parse_manifest(csv_sandwich('s3://in-bucket/2.wav,"v1,s3://out-bucket/2.mp3,2'), "m.csv"),
                 3, "(line)", "cannot read the CSV row", [2, 4])


def test_csv_without_a_header() -> None:
    data = b"s3://in-bucket/1.wav,v1,s3://out-bucket/1.mp3\n"
    only_problem(parse_manifest(data, "m.csv"), 1, "(header)", "the first row must be a header", [])


def test_csv_header_without_rows() -> None:
    only_problem(parse_manifest(CSV_HEADER.encode(), "m.csv"), 0, "(file)", "a header but no job rows", [])


# --- the command

def test_validate_cli_prints_every_problem_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_ALLOWED_OUTPUT_BUCKETS", "out-bucket")
    monkeypatch.delenv("STS_ALLOWED_INPUT_BUCKETS", raising=False)
    get_settings.cache_clear()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(good(1)).encode() + b"\n" + b"[1]\n"
                     + json.dumps(bad(seed=-1, output="s3://elsewhere/x.mp3")).encode() + b"\n"
                     + json.dumps(good(1)).encode() + b"\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}:2: (line): each line must be one JSON object {{...}}, got an array",
        f"{path}:3: seed: must be between 0 and 4294967295, got -1",
        f"{path}:3: output: bucket 'elsewhere' is not an allowed output bucket (out-bucket); use one of those, "
        "or add it to STS_ALLOWED_OUTPUT_BUCKETS",
        f"{path}:4: output: same output as {path}:1; each job needs its own output",
        "4 lines, 1 valid, 4 problems in 1 file",
    ]


def test_validate_cli_rejects_a_bad_prefix(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(good(1)) + "\n")
    result = CliRunner().invoke(main, ["validate", str(path), "--output-prefix", "out-bucket/x"])
    assert result.exit_code == 2
    assert "must be an s3://bucket/key URI" in result.output
