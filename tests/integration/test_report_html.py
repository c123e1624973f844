"""The HTML report: drawn by headless Chromium into a PNG that is not blank, with the same numbers as ``--json``."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pipeline.errors import ApiError, BudgetExceededError, InputError
from pipeline.local.services import LocalStack
from pipeline.manifest.load import load_manifests
from pipeline.s3uri import S3Uri
from pipeline.storage.records import commit, record_failure
from tests.integration.test_reconcile_s3 import cli, no_redis, storage_for
from tests.report.test_reconcile import failure, line, provenance, rejected_error

CHROMIUM = ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FLAGS = ((), (), ("too_quiet",), (), ("duration_drift",), ("clipping", "too_loud"))


def write_run(stack: LocalStack, bucket: str, tmp: Path) -> list[Path]:
    """Three shards of 20 lines: mostly successes spread over 40 minutes with varied drift and loudness, and some of
    every other state."""
    storage = storage_for(stack)
    paths = []
    for shard in ("north", "south", "west"):
        path = tmp / f"{shard}.jsonl"
        path.write_text("".join(json.dumps(line(shard, n, bucket)) + "\n" for n in range(1, 21)))
        paths.append(path)
    for k, entry in enumerate(e for shard in load_manifests(paths) for e in shard.entries):
        out = S3Uri.parse(entry.output)
        minute, second = divmod(k * 41, 60)
        at = f"2025-03-01T10:{minute:02d}:{second:02d}+00:00"
        if k % 11 == 3:
            record_failure(storage, out, failure(entry, InputError("input is not audio", reason="not_audio"), at=at))
        elif k % 17 == 5:
            record_failure(storage, out, failure(entry, rejected_error(), at=at))
        elif k % 19 == 7:
            record_failure(storage, out, failure(entry, BudgetExceededError("budget spent"), at=at))
        elif k % 23 == 9:
            record_failure(storage, out, failure(entry, ApiError("voice not found", status=404), credits=2, at=at))
        elif k % 29 == 11:
            storage.put_bytes(out, b"uploaded, never committed")
        elif k % 31 != 13:  # the rest succeeded, but for the missing ones
            storage.put_bytes(out, b"audio")
            commit(storage, out, provenance(entry, credits=40 + k % 7 * 2.5, finished_at=at,
                                            drift_ms=(k * 37) % 90 - 30, lufs=-26 + (k * 13) % 14,
                                            flags=FLAGS[k % len(FLAGS)]))
    return paths


class Figures(HTMLParser):
    """Every element with a ``data-key``: its key and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._key = dict(attrs).get("data-key") or self._key

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.found[self._key] = data
            self._key = None


def resolve(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = len(data) if part == "length" else data[int(part)] if isinstance(data, list) else data[part]
    return data


def png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the (filtered) pixel data.

    A blank page filters down to a handful of byte values; text and charts give well over a hundred.
    """
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", blob[16:24])
    pixels, offset = b"", 8
    while offset < len(blob):
        length, kind = struct.unpack(">I4s", blob[offset:offset + 8])
        if kind == b"IDAT":
            pixels += blob[offset + 8:offset + 8 + length]
        offset += length + 12
    return width, height, len(set(zlib.decompress(pixels)))


def test_html_report_renders_with_the_json_numbers(stack: LocalStack, bucket: str, tmp_path: Path) -> None:
    paths = write_run(stack, bucket, tmp_path)
    page = tmp_path / "report.html"
    result = cli(stack, "reconcile", *map(str, paths), "--json", "--html", str(page), **no_redis())
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    assert html.count("<svg") == 4  # drift and loudness histograms, throughput, cost per shard

    figures = Figures()
    figures.feed(html)
    columns = ("lines", "succeeded", "failed", "rejected", "deferred", "orphan", "missing", "invalid", "credits")
    expected = {f"totals.{c}" for c in columns} | {f"shards.{i}.{c}" for i in range(3) for c in columns}
    expected |= {f"failures.{i}.count" for i in range(len(data["failures"]))}
    expected |= {f"rejected.{i}.count" for i in range(len(data["rejected"]))}
    expected |= {f"quality.flags.{flag}" for flag in data["quality"]["flags"]}
    expected |= {"cost.credits", "cost.requests", "quality.measured", "orphans.length", "missing.length"}
    assert expected <= set(figures.found)
    for key, text in figures.found.items():
        assert float(text.replace(",", "")) == resolve(data, key), key
    assert data["totals"]["succeeded"] >= 40 and data["quality"]["flags"]["too_quiet"] > 0

    shot = tmp_path / "report.png"
    subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", page.as_uri()], capture_output=True, timeout=90, check=True)
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == (1280, 2000) and colours > 100
