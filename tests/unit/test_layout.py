"""The package's shape: no module imports another that imports it back, counting imports
under TYPE_CHECKING and inside functions. Which layer may import which is import-linter's
contract in pyproject.toml, run by scripts/test."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "reconciler"


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


def test_every_package_says_what_it_may_import() -> None:
    """The layers are checked by import-linter (pyproject.toml); each package's docstring
    tells a reader the same rule where the code is."""
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE or init.parent.parent != PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc, f"{init.parent.name}/__init__.py does not say what it may import"


def test_few_modules_are_loose_at_the_top() -> None:
    """A module belongs in the package of its layer; only the foundation stays at the top."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= 8, loose
