"""``make demo``: the main job end to end on embedded local services, then everything stopped again.

Starts redis-server, moto's S3 server, the offline STS server and one worker on free loopback ports; records the
sample inputs that ``manifests/examples/demo.jsonl`` names (espeak-ng speech where installed, else a speech-like
signal); uploads them; submits the manifest with a progress bar; prints a summary from the provenance records;
copies outputs and provenance to ``./demo-output/`` with the run's HTML report; and says what to try next.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.audio.prepare import resample_mono
from pipeline.config import Settings
from pipeline.local.samples import write_speech_like
from pipeline.local.services import LocalStack
from pipeline.manifest.load import Shard, load_manifest
from pipeline.run.stored import runs_root
from pipeline.s3uri import S3Uri
from pipeline.storage.records import ProvenanceRecord, provenance_uri
from pipeline.storage.s3 import Storage, sha256_file

MANIFEST = Path("manifests/examples/demo.jsonl")
OUT_DIR = Path("demo-output")
SENTENCES = (
    "Welcome back to the show. Today we talk about old radios, and why they still sound so warm.",
    "The quick brown fox jumps over the lazy dog, twice, and then takes a well deserved nap.",
    "Every recording keeps its timing, its pauses, and its emotion, only the voice is new.",
    "Batch jobs run at night, and in the morning the reconciler says what is done.",
    "This sentence was spoken by a robot and converted by a pipeline on your own machine.",
    "Thank you for listening. See you next week, same time, same place.",
)


def record_sample(path: Path, index: int) -> None:
    """A spoken sentence from espeak-ng (16 kHz WAV), or a speech-like signal where espeak-ng is missing."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        write_speech_like(path, 6.0, 16000, seed=index)
        return
    raw = path.with_suffix(".raw.wav")
    voice = ("en-us", "en-gb", "en-us+f3", "en-us+m3")[index % 4]
    subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw), SENTENCES[index % len(SENTENCES)]],
                   check=True, capture_output=True)
    resample_mono(raw, path, sample_rate=16000)
    raw.unlink()


def summary(storage: Storage, outputs: list[str]) -> Table:
    table = Table(title="demo: converted recordings")
    for column in ("output", "voice", "format", "in s", "out s", "LUFS", "credits", "attempts"):
        table.add_column(column)
    for uri in outputs:
        found = storage.get_json(provenance_uri(S3Uri.parse(uri)))
        if found is None:
            table.add_row(uri, "-", "-", "-", "-", "-", "-", "[red]no provenance")
            continue
        record = ProvenanceRecord.from_dict(found[0])
        lufs = record.quality.get("lufs")
        table.add_row(uri.rsplit("/", 1)[-1], record.request["params"]["voice_id"],
                      record.output["output_format"], f"{record.input['duration_s']:.2f}",
                      f"{record.output['duration_s']:.2f}", "-" if lufs is None else f"{lufs:.1f}",
                      f"{record.cost.credits:.0f}", str(len(record.attempts)))
    return table


def copy_results(storage: Storage, outputs: list[str]) -> int:
    OUT_DIR.mkdir(exist_ok=True)
    copied = 0
    for uri in outputs:
        parsed = S3Uri.parse(uri)
        for source in (parsed, provenance_uri(parsed)):
            if storage.head(source) is not None:
                storage.download(source, OUT_DIR / source.key.rsplit("/", 1)[-1])
                copied += 1
    return copied


def main() -> int:
    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    shard = load_manifest(MANIFEST)
    if shard.problems:
        for problem in shard.problems:
            console.print(str(problem), markup=False)
        return 1
    say = console.print
    say(f"[bold]sts-pipeline demo[/]: {len(shard.entries)} recordings converted into other voices, on this machine; "
        "nothing leaves it.")
    with tempfile.TemporaryDirectory(prefix="sts-demo-") as tmp, LocalStack(workdir=Path(tmp) / "stack") as stack:
        say("starting on loopback: redis-server (queue), moto (S3), the offline speech-to-speech server, one worker")
        say("  the voices are the offline server's DSP voices and its credits are simulated: no API key, no account")
        stack.start_redis()
        stack.start_s3()
        stack.start_sts()
        stack.start_worker(concurrency=2)
        with stack.applied():
            storage = Storage.from_settings(Settings())
            _upload_samples(storage, shard, Path(tmp))
            say(f"recorded {len({e.job.input for e in shard.entries})} sample sentences with "
                f"{'espeak-ng' if shutil.which('espeak-ng') else 'a speech-like signal'} and uploaded them to S3")
            say(f"submitting {MANIFEST} (one task per line)")
            submitted = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "submit", str(MANIFEST), "--wait", "--timeout", "300"],
                env=stack.env(), stdout=subprocess.PIPE, text=True)
            run_id = submitted.stdout.strip().splitlines()[-1] if submitted.stdout.strip() else "?"
            outputs = [entry.output for entry in shard.entries]
            console.print(summary(storage, outputs))
            copied = copy_results(storage, outputs)
            report = OUT_DIR / "report.html"
            runs = runs_root(Settings(), S3Uri.parse(outputs[0]).bucket)
            subprocess.run([sys.executable, "-m", "pipeline.cli", "reconcile", "--run", run_id, "--runs-uri", str(runs),
                            "--html", str(report)], env=stack.env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        say("stopping the local services")
    say(f"run {run_id}: {copied} files (the outputs and a .provenance.json beside each: input hash, request, every "
        f"attempt, quality, cost) are in ./{OUT_DIR}/, with the run's report in ./{report}", soft_wrap=True)
    say("next:")
    say(f"  open the report:    xdg-open {report}    (on a real run: sts-pipeline reconcile --run RUN_ID --html "
        "report.html)", markup=False, soft_wrap=True)
    say(f"  play an output:     ffplay -nodisp -autoexit {OUT_DIR}/greeting.mp3", markup=False, soft_wrap=True)
    return submitted.returncode


def _upload_samples(storage: Storage, shard: Shard, tmp: Path) -> None:
    inputs = sorted({entry.job.input for entry in shard.entries})
    for bucket in {S3Uri.parse(u).bucket for u in inputs} | {S3Uri.parse(e.output).bucket for e in shard.entries}:
        storage.ensure_bucket(bucket)
    for index, uri in enumerate(inputs):
        wav = tmp / f"sample-{index}.wav"
        record_sample(wav, index)
        storage.upload_file(wav, S3Uri.parse(uri), content_type="audio/wav", sha256=sha256_file(wav))


if __name__ == "__main__":
    sys.exit(main())
