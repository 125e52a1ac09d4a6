"""The rooms of each service: no file imports another in a loop (type-checking imports
included), no service imports another, and the shared library imports no service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file())


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (functions, TYPE_CHECKING)."""
    found: set[str] = set()
    package = module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph(package: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / package.replace(".", "/")).rglob("*.py")}
    return {name: imported(path) & set(files) - {name} for name, path in files.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_loop_finder_finds_a_loop_and_passes_a_tree() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("service", SERVICES)
def test_no_file_of_a_service_imports_another_in_a_loop(service: str) -> None:
    loop = cycle(graph(f"services.{service}"))
    assert loop is None, " -> ".join(loop or [])


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another_service(service: str) -> None:
    others = tuple(f"services.{s}" for s in SERVICES if s != service)
    for path in (ROOT / "services" / service).rglob("*.py"):
        wrong = sorted(m for m in imported(path) if m.startswith(others))
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_the_shared_library_imports_no_service() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        wrong = sorted(m for m in imported(path) if m.startswith("services"))
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"
