"""``plan`` probes S3 inputs without handing ffprobe a URL: ranged reads of the head (and tail) into a local file,
probed through the sandbox. No signed URL is made, printed or put on a command line.

Run against the in-memory S3 double and against moto's S3 (in process), whose boto3 client could presign.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipeline.config import Settings
from pipeline.manifest.load import Shard, parse_manifest
from pipeline.run import plan as plan_module
from pipeline.run.plan import make_plan
from pipeline.s3uri import S3Uri
from pipeline.storage.memory import memory_storage
from pipeline.storage.s3 import Storage
from tests.audio.helpers import SECONDS, CountingServer, lying_flac, record_argvs
from tests.audio.helpers import ffmpeg as make

VOICE = "BKkWQENix2VWeAv6YV5R"
SIGNS_OF_A_URL = ("X-Amz-Signature", "X-Amz-Credential", "Signature=", "http://", "https://", "AWSAccessKeyId")


@pytest.fixture(params=["memory", "moto"])
def storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    if request.param == "memory":
        yield memory_storage("in-bucket", "out-bucket")
        return
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "session-token-that-must-not-leak",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("in-bucket", "out-bucket"):
            client.create_bucket(Bucket=bucket)
        yield Storage(client)


@pytest.fixture(scope="module")
def inputs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plan-inputs")
    made = {"wav": files["wav"], "flac": files["flac"], "mp3": files["mp3"]}
    for name, args in {"ogg": ["-c:a", "libvorbis"], "m4a": ["-c:a", "aac"], "opus": ["-c:a", "libopus"]}.items():
        made[name] = d / f"speech.{name}"
        make("-i", str(files["wav"]), *args, str(made[name]))
    made["plain_mp3"] = d / "plain.mp3"  # no Xing header: the length can only be estimated
    make("-i", str(files["wav"]), "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", str(made["plain_mp3"]))
    return made


def shard_of(keys: list[str]) -> Shard:
    lines = [{"input": f"s3://in-bucket/{key}", "voice_id": VOICE, "output": f"s3://out-bucket/{i}.mp3",
              "id": f"clip-{i}"}
             for i, key in enumerate(keys)]
    return parse_manifest("".join(json.dumps(line) + "\n" for line in lines).encode(), "night.jsonl")


def no_url_in(argvs: list[list[str]], *outputs: Any) -> None:
    for argv in argvs:
        for arg in argv:
            assert not any(sign in arg for sign in SIGNS_OF_A_URL), argv
        assert argv[argv.index("-i") + 1].startswith("file:/")
    for output in outputs:
        text = json.dumps(output) if not isinstance(output, str) else output
        assert not any(sign in text for sign in (*SIGNS_OF_A_URL, "session-token-that-must-not-leak")), text


def test_plan_probes_without_a_url(storage: Storage, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    keys = [f"clip.{name}" if "_" not in name else f"{name}.mp3" for name in inputs]
    for key, path in zip(keys, inputs.values(), strict=True):
        storage.put_bytes(S3Uri("in-bucket", key), path.read_bytes())
    seen = record_argvs(monkeypatch)
    plan = make_plan(storage, [shard_of(keys)], Settings(), concurrency=2)
    shard = plan.shards[0]
    assert shard.unprobed == []
    assert plan.audio_seconds == pytest.approx(SECONDS * len(keys), abs=0.5)
    assert [line.split(": ")[1] for line in shard.estimated] == ["s3://in-bucket/plain_mp3.mp3"]
    assert plan.estimated_inputs == 1
    # one ffprobe per input but the WAV and the FLAC, whose headers are read in process (pipeline.audio.native)
    assert {argv[0] for argv in seen} == {"ffprobe"} and len(seen) == len(keys) - 2
    no_url_in(seen, plan.to_dict(), capsys.readouterr().out)


def test_the_head_and_tail_are_enough_for_containers_that_keep_their_length_at_the_end(
        storage: Storage, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "HEAD_BYTES", 4096)
    monkeypatch.setattr(plan_module, "TAIL_BYTES", 4096)
    for name in ("ogg", "opus", "m4a", "wav", "flac", "mp3"):
        data = inputs[name].read_bytes()
        assert len(data) > 2 * 4096 + 1000
        storage.put_bytes(S3Uri("in-bucket", f"big.{name}"), data)
        found = plan_module.probe_input(storage, f"s3://in-bucket/big.{name}")
        assert (found.seconds, found.estimated) == (pytest.approx(SECONDS, abs=0.1), False), name


def test_plan_reports_a_playlist_and_fetches_nothing(storage: Storage, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    with CountingServer() as server:
        storage.put_bytes(S3Uri("in-bucket", "feed.mp3"),
                          f"#EXTM3U\n#EXTINF:2.0,\n{server.url}/segment.mp3\n#EXT-X-ENDLIST\n".encode())
        seen = record_argvs(monkeypatch)
        plan = make_plan(storage, [shard_of(["feed.mp3"])], Settings(), concurrency=1)
        assert server.requests == []
    (problem,) = plan.shards[0].unprobed
    assert "s3://in-bucket/feed.mp3" in problem and "playlist" in problem and str(server.port) not in problem
    assert seen == []


def test_plan_reads_the_header_and_says_so(storage: Storage, tmp_path: Path) -> None:
    """A plan can be lied to (the worker counts); what it reads is the header's claim, never a decode."""
    liar = lying_flac(tmp_path / "liar.flac", actual_s=20.0, claimed_s=2.0)
    storage.put_bytes(S3Uri("in-bucket", "liar.flac"), liar.read_bytes())
    assert plan_module.probe_input(storage, "s3://in-bucket/liar.flac").seconds == pytest.approx(2.0)
