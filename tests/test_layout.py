"""The package's shape: no module imports another that imports it back, counting imports
under TYPE_CHECKING and inside functions; the pure decisions import no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "reconciler"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every reconciler module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    edges = {name: imports_of(path, known) - {name} for name, path in paths.items()}
    # A package's __init__ is not an import of its parent's contents.
    return {
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in edges.items()
    }


def test_no_import_cycle_anywhere_in_the_package() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert cycles == []


def test_the_decisions_are_pure() -> None:
    """plan.py and verdict.py import only the model: no adapters, no stages, no I/O."""
    edges = graph()
    for module in ("reconciler.plan", "reconciler.verdict", "reconciler.model"):
        assert edges[module] <= {"reconciler.model"}, (module, edges[module])


def test_adapters_import_nothing_above_them() -> None:
    above = {
        "reconciler.stages",
        "reconciler.loop",
        "reconciler.supervisor",
        "reconciler.daemon",
        "reconciler.http",
        "reconciler.reporter",
    }
    for name, targets in graph().items():
        if name.startswith("reconciler.adapters"):
            assert not {
                t for t in targets if any(t == a or t.startswith(a + ".") for a in above)
            }, name
