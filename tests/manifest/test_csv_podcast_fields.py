"""CSV cells of the podcast fields: ``copy_tags`` a boolean, ``master`` a word or a JSON object."""

from __future__ import annotations

from pathlib import Path

from pipeline.manifest.job import MasterTarget
from pipeline.manifest.load import load_manifest

HEADER = "input,voice_id,output,copy_tags,master\n"


def test_copy_tags_and_master_cells(tmp_path: Path) -> None:
    path = tmp_path / "shard.csv"
    path.write_text(HEADER + 's3://b-in/a.mp3,BKkWQENix2VWeAv6YV5R,s3://b-out/a.mp3,true,podcast\n'
                    's3://b-in/b.mp3,BKkWQENix2VWeAv6YV5R,s3://b-out/b.mp3,false,"{""lufs"": -16}"\n'
                    's3://b-in/c.mp3,BKkWQENix2VWeAv6YV5R,s3://b-out/c.mp3,,\n'
                    's3://b-in/d.mp3,BKkWQENix2VWeAv6YV5R,s3://b-out/d.mp3,yes,loud\n')
    shard = load_manifest(path)
    jobs = [entry.job for entry in shard.entries]
    assert [(job.copy_tags, job.master) for job in jobs] == [
        (True, "podcast"), (False, MasterTarget(lufs=-16.0)), (False, None)]
    assert {problem.line for problem in shard.problems} == {5}  # "loud" is neither podcast nor an object
