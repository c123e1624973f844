"""The ffmpeg boundary holds: one library module starts ffmpeg/ffprobe, through one pair of helpers.

A sandbox (protocol whitelist, demuxer allow-list, timeouts) is only as good as the one place it is applied, so these
checks fail as soon as a second place appears.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.audio import ffmpeg
from tests.audio.helpers import SECONDS

ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = ROOT / "pipeline" / "audio" / "ffmpeg.py"
#: modules that start other programs, and which: none of them may be ffmpeg or ffprobe
OTHER_PROGRAMS = {
    "pipeline/local/services.py": "redis-server, moto, the offline STS server and Celery workers",
    "pipeline/local/demo.py": "espeak-ng for the spoken samples, and the CLI's submit",
    "pipeline/local/lane.py": "the CLI (submit, reconcile, ...) for tests and benchmarks",
}
#: the offline server plays the vendor and keeps its own ffmpeg; it must not share the client's code
OWN_FFMPEG = ("pipeline/offline/",)
PROCESS_MODULES = {"subprocess", "asyncio.subprocess", "multiprocessing"}
PROCESS_CALLS = {"system", "popen", "spawnl", "spawnv", "execv", "execvp", "create_subprocess_exec",
                 "create_subprocess_shell"}


def library_modules() -> list[Path]:
    return sorted(p for folder in ("pipeline", "workers") for p in (ROOT / folder).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def starts_processes(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name in PROCESS_MODULES for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module in PROCESS_MODULES:
            return True
        if isinstance(node, ast.Attribute) and node.attr in PROCESS_CALLS:
            return True
    return False


def names_ffmpeg(tree: ast.AST) -> list[str]:
    """String constants that are a program name (``ffmpeg``, ``/usr/bin/ffprobe``), and imports of the constants."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.rsplit("/", 1)[-1] in (ffmpeg.FFMPEG, ffmpeg.FFPROBE):
                found.append(f"line {node.lineno}: {node.value!r}")
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline.audio.ffmpeg":
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in ("FFMPEG", "FFPROBE")]
    return found


def test_only_the_boundary_and_the_listed_modules_start_processes() -> None:
    unexpected = []
    for path in library_modules():
        name = relative(path)
        if path == BOUNDARY or name.startswith(OWN_FFMPEG) or name in OTHER_PROGRAMS:
            continue
        if starts_processes(ast.parse(path.read_text(), name)):
            unexpected.append(name)
    assert unexpected == [], f"these modules start processes; run ffmpeg/ffprobe through {relative(BOUNDARY)}"


def test_no_library_module_but_the_boundary_names_ffmpeg_or_ffprobe_as_a_program() -> None:
    found = {}
    for path in library_modules():
        name = relative(path)
        if path == BOUNDARY or name.startswith(OWN_FFMPEG):
            continue
        if hits := names_ffmpeg(ast.parse(path.read_text(), name)):
            found[name] = hits
    assert found == {}


def test_the_offline_server_does_not_import_the_library_audio_package() -> None:
    for path in (ROOT / "pipeline" / "offline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), relative(path))):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("pipeline.audio"), relative(path)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pipeline.audio") for a in node.names), relative(path)


def test_inside_the_boundary_only_run_and_start_call_subprocess() -> None:
    tree = ast.parse(BOUNDARY.read_text())
    callers = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            for node in ast.walk(function):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "subprocess" and node.attr in ("run", "Popen", "call", "check_output")):
                    callers.add(function.name)
    assert callers == {"_run", "_start"}


def test_every_command_line_starts_with_a_program_the_boundary_knows(files: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.audio.decode import duration_s
    from pipeline.audio.prepare import prepare, to_flac
    from pipeline.audio.probe import probe

    seen: list[str] = []
    run, start = ffmpeg._run, ffmpeg._start
    monkeypatch.setattr(ffmpeg, "_run", lambda argv, **kw: (seen.append(argv[0]), run(argv, **kw))[1])
    monkeypatch.setattr(ffmpeg, "_start", lambda argv, **kw: (seen.append(argv[0]), start(argv, **kw))[1])
    info = probe(files["six"])
    prepare(files["six"], info, "other", tmp_path)
    to_flac(files["mp3"], tmp_path / "copy.flac")
    assert duration_s(files["wav"]) == SECONDS
    assert set(seen) == {ffmpeg.FFMPEG, ffmpeg.FFPROBE} and len(seen) >= 4


def test_stderr_tails_hide_the_temporary_path(tmp_path: Path) -> None:
    local = tmp_path / "input.wav"
    assert ffmpeg.tail(f"{local}: Invalid data found\n  when processing input", local) == (
        "<input>: Invalid data found when processing input")
    assert ffmpeg.tail("") == "no message"
    assert len(ffmpeg.tail("x" * 10_000)) == 400
