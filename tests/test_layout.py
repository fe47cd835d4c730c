"""The shape of the code, checked so it stays one a newcomer can hold in their head: every
public name a module defines is in its ``__all__`` (a reader of ``__all__`` sees the module's
interface), no function is longer than a screen, no module longer than 500 lines, and no
two modules import each other (directly or around a loop)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import boundary_unlearning

MODULES = [
    m.name
    for m in pkgutil.walk_packages(boundary_unlearning.__path__, "boundary_unlearning.")
    if not m.name.endswith("__main__")
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_name_the_module_defines(name: str) -> None:
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        return  # a module without an interface (cli, _utils): nothing to list
    defined = [
        key for key, value in vars(module).items()
        if not key.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == name
    ]  # fmt: skip
    assert sorted(set(defined) - set(module.__all__)) == []


SRC = Path(boundary_unlearning.__file__).parent
FILES = sorted(SRC.rglob("*.py"))
LONGEST_FUNCTION = 60  # lines of a function, its docstring excluded
LONGEST_MODULE = 500  # lines
ALLOWED_LONG = {"build_parser"}  # the argparse declarations: a table, not logic


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if doc and isinstance(first.value.value, str):  # type: ignore[attr-defined]
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _function_lines(node)
                if n > LONGEST_FUNCTION and node.name not in ALLOWED_LONG:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n})")
    assert long == []


def test_no_module_is_longer_than_500_lines() -> None:
    lines = {p.relative_to(SRC).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in FILES}  # fmt: skip
    assert {name: n for name, n in lines.items() if n > LONGEST_MODULE} == {}


def _imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports at module level (outside functions and
    ``if TYPE_CHECKING:``), as dotted names."""
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("boundary_unlearning"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("boundary_unlearning"))
    return found


def test_no_import_cycle() -> None:
    modules = {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in FILES
    }
    graph = {name: {m for m in _imports(path) if m in modules and m != name}
             for name, path in modules.items()}  # fmt: skip
    # a package imports its own modules (its __init__ re-exports them): not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(f"{name}.")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
