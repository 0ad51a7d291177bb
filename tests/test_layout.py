"""The layout rules the README's "How it fits together" promises: stage folders, one direction of
dependency (`schedules -> digest -> subscribers`), and no import cycles, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("digest", "schedules", "subscribers")
# Settings-level helpers every stage uses; everything else lives in a stage folder.
TOP_LEVEL_MODULES = {"__init__.py", "settings.py", "errors.py"}
# The entry points compose everything, so they alone may reach up to `schedules`.
ENTRY_POINTS = ("digest.cli",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # Alembic loads these by path, not by import
            found[_module_name(path)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at the top or inside a function."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != here:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _without_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing `a.b.c` runs `a/__init__` and `a/b/__init__`; those edges are not the module's
    own choice, so a package's `__init__` importing its children is not a cycle by itself."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_module_sits_at_the_top_of_digest_outside_a_stage_folder():
    loose = sorted(p.name for p in (ROOT / "digest").glob("*.py")
                   if p.name not in TOP_LEVEL_MODULES)
    assert loose == [], f"put these in a stage folder: {loose}"


def test_dependency_direction_is_schedules_then_digest_then_subscribers():
    wrong = []
    for module, deps in _graph().items():
        for dep in deps:
            if module.startswith("subscribers") and not dep.startswith("subscribers"):
                wrong.append((module, dep))
            if (module.startswith("digest") and dep.startswith("schedules")
                    and not module.startswith(ENTRY_POINTS)):
                wrong.append((module, dep))
    assert wrong == []


def test_no_import_cycles():
    graph = _without_parents(_graph())
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_lazy_imports(tmp_path):
    """Guard for the check itself: an import inside a function counts."""
    path = ROOT / "digest" / "cli" / "send.py"
    assert "schedules.weekly" in _imports(path, _project_modules()) or \
        "digest.cli.schedule" in _imports(path, _project_modules())
