"""The layers of docs/architecture.md hold: imports point one way and no module imports itself back.

Every import of a vividcli module counts, at the top of a file or inside a function (a lazy import
is still a dependency), including those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top (docs/architecture.md). A module may import its own layer and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "config", "files", "devices", "progress", "interrupt", "parallel"),
    ("media", "models", "planning", "cache"),
    ("stages", "quality", "hub"),
    ("sampling",),
    ("pipeline",),
    ("engines",),
    ("runner",),
    ("commands",),
    ("cli", "__main__"),
    ("testing",),  # test support: may use anything, nothing in the product uses it
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, package_root: str) -> set[str]:
    """The package's modules that `path` imports anywhere (absolute or relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == package_root or name.startswith(package_root + ".")}
    return found


def import_graph(root: Path, package_root: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (names that are not modules map to their module)."""
    files = {module_name(p, root): p for p in (root / package_root).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imports_of(path, module, package_root):
            while name not in files and "." in name:  # `from pkg.mod import Class` -> pkg.mod
                name = name.rsplit(".", 1)[0]
            if name in files and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def layer_of(module: str, layers: list[tuple[str, ...]]) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself (__init__): version only
    for rank, names in enumerate(layers):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} is in no layer of docs/architecture.md; add it to LAYERS and the docs")


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, ...]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        rank = layer_of(module, layers)
        for target in sorted(targets):
            target_rank = layer_of(target, layers)
            if rank is not None and target_rank is not None and target_rank > rank:
                problems.append(f"{module} imports {target} from a higher layer")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(import_graph(SRC, "vividcli"), LAYERS) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(SRC, "vividcli")) == []


def test_nothing_in_the_product_imports_test_support() -> None:
    graph = import_graph(SRC, "vividcli")
    users = sorted(m for m, targets in graph.items()
                   if not m.startswith("vividcli.testing") and any(t.startswith("vividcli.testing") for t in targets))
    assert users == []


@pytest.fixture()
def fake_package(tmp_path: Path) -> Path:
    """pkg.low imports pkg.high lazily (upward); pkg.high.a and pkg.high.b import each other (a cycle)."""
    pkg = tmp_path / "pkg"
    (pkg / "high").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.high.a import thing\n")
    (pkg / "high" / "__init__.py").write_text("")
    (pkg / "high" / "a.py").write_text("from . import b\nthing = 1\n")
    (pkg / "high" / "b.py").write_text("from pkg.high.a import thing\n")
    return tmp_path


def test_the_checks_see_a_lazy_upward_import_and_a_relative_cycle(fake_package: Path) -> None:
    graph = import_graph(fake_package, "pkg")
    assert upward_imports(graph, [("low",), ("high",)]) == ["pkg.low imports pkg.high.a from a higher layer"]
    assert cycles(graph) == [["pkg.high.a", "pkg.high.b"]]
