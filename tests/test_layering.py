"""The packages' dependencies point one way, with no cycles: the data path reads top to bottom.

Read from the source with ``ast`` (imports inside functions and under TYPE_CHECKING count too: a lazy import is still
a dependency).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEAVES = {"config", "errors", "reasons", "states", "formats", "s3uri", "_redis", "keys", "text", "__init__"}
#: modules inside a stage package that are leaves all the same: they import only leaves, and every part may use them
#: (tracing's hooks sit in the api client, in submit and in the job, while the rest of ops reads api and run)
LEAF_MODULES = {"pipeline.ops.tracing"}
#: what each part of the library may import from pipeline/ (leaves are always allowed, except for offline)
ALLOWED: dict[str, set[str]] = {
    "leaf": set(),
    "manifest": set(),
    "storage": set(),
    "audio": set(),
    "api": {"manifest"},
    "report": {"manifest", "storage"},
    "run": {"manifest", "storage", "audio", "api", "report"},
    "ops": {"api", "run"},
    "conversion": {"manifest", "storage", "audio", "api", "run", "ops"},
    "local": {"manifest", "storage", "audio", "api", "run", "report", "conversion"},
    "feed": {"manifest", "storage", "audio", "run", "report"},
    "dataset": {"manifest", "storage", "audio", "run", "report"},
    "cli": {"manifest", "storage", "audio", "api", "run", "report", "conversion", "local", "offline", "workers",
            "feed", "dataset", "ops"},
    "workers": {"conversion", "run", "api", "storage", "ops"},
}
#: third-party packages a part must never load (report works after Redis is gone; offline is not the client)
FORBIDDEN_THIRD_PARTY = {"report": {"redis", "celery"}, "manifest": {"redis", "celery", "httpx", "numpy"}}


def _part(path: Path) -> tuple[str, str]:
    """(part, module name) of a source file: the stage package, 'leaf' or 'workers'."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts
    if parts[0] == "workers":
        return "workers", ".".join(parts)
    if len(parts) == 2 or ".".join(parts) in LEAF_MODULES:
        return "leaf", ".".join(parts)
    return parts[1], ".".join(parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _target(name: str) -> str | None:
    """The part an imported pipeline name belongs to, or None for anything outside pipeline/ and workers/."""
    bits = name.split(".")
    if bits[0] == "workers":
        return "workers"
    if bits[0] != "pipeline":
        return None
    if any(name == leaf or name.startswith(f"{leaf}.") for leaf in LEAF_MODULES):
        return "leaf"
    if len(bits) == 1 or bits[1] in LEAVES or bits[1] == "__version__":
        return "leaf"
    return bits[1]


def _sources() -> list[Path]:
    return sorted(p for folder in ("pipeline", "workers") for p in (ROOT / folder).rglob("*.py"))


def test_every_import_points_down_the_data_path() -> None:
    wrong = []
    for path in _sources():
        part, module = _part(path)
        for name in _imports(path):
            target = _target(name)
            if target is None or target == part:
                continue
            if part == "offline":
                if name not in ("pipeline.formats", "pipeline", "pipeline.__version__") and \
                        not name.startswith("pipeline.formats."):
                    wrong.append(f"{module} imports {name} (offline/ imports only the published contract)")
                continue
            if target != "leaf" and target not in ALLOWED[part]:
                wrong.append(f"{module} ({part}) imports {name} ({target})")
    assert wrong == []


def test_no_part_loads_what_it_must_not() -> None:
    wrong = []
    for path in _sources():
        part, module = _part(path)
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(part, set()):
                wrong.append(f"{module} imports {name}")
    assert wrong == []


def test_no_import_cycle_between_modules() -> None:
    modules = {_part(p)[1]: p for p in _sources()}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in _imports(path):
            # "from pipeline.x import y" may name module pipeline.x.y or attribute y of pipeline.x
            for candidate in (name, name.rsplit(".", 1)[0]):
                key = candidate if candidate in modules else f"{candidate}.__init__"
                if key in modules and key != module and not key.endswith("__init__"):
                    graph[module].add(key)
                    break
    seen: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for module in sorted(modules):
        if module not in seen:
            visit(module, [module])
    assert cycles == []


def test_no_library_function_is_longer_than_60_lines() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_only_the_integration_folder_asks_for_services() -> None:
    services = {"stack", "offline_sts", "s3", "bucket", "redis_client"}
    wrong = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if "integration" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        own = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
               and not node.name.startswith("test_")}  # a module's own fixture of the same name (a memory S3)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                asked = {arg.arg for arg in node.args.args} & (services - own)
                if asked:
                    wrong.append(f"{path.relative_to(ROOT)}::{node.name} asks for {sorted(asked)}")
    assert wrong == []
