"""The package's import graph has no circle, and its layers point one way.

Every ``import`` of a ``jaxalign`` module anywhere in a module's source counts (inside a function
too: a function-level import hides a circle from Python's import machinery, not from the design).
An edge goes to the deepest module the import names (``from jaxalign.cli.common import x`` ->
``jaxalign.cli.common``; ``from jaxalign.prompting import batch`` -> ``jaxalign.prompting.batch``).
The top-level ``jaxalign`` package (lazy names only) is not a node.

Above the modules, the graph of packages and top-level modules (``jaxalign.model``,
``jaxalign.optimize``, ``jaxalign.scoring``...: every module collapsed onto its first part below
``jaxalign``) has no circle either: two packages that import each other, even from inside a
function, are one room split in two. And no module imports a private (``_name``) name from another
package: what crosses a package's wall is its public surface.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxalign"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every import statement of its source."""
    root = next(iter(files)).split(".")[0]
    def deepest(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {deepest(a.name) for a in node.names if a.name.startswith(root)}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package up
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith(root):
                    edges |= {deepest(f"{base}.{a.name}") if f"{base}.{a.name}" in files else deepest(base)
                              for a in node.names}
        graph[module] = edges - {None, module, root}
    return graph


def room(module: str) -> str:
    """A module's package or top-level module: ``jaxalign.optimize.pipeline`` -> ``jaxalign.optimize``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed onto :func:`room` (edges inside a room dropped)."""
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        out.setdefault(room(module), set()).update(room(d) for d in deps if room(d) != room(module))
    return out


def private_imports(files: dict[str, Path]) -> list[tuple[str, str, str]]:
    """``(importer, module, name)`` for every ``from M import _name`` whose ``M`` lies in another
    room than the importer (dunder names such as ``__version__`` are public)."""
    root = next(iter(files)).split(".")[0]
    found = []
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(root):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and room(node.module) != room(module):
                        found.append((module, node.module, alias.name))
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """The package's import graph, read once for the module's tests."""
    return import_graph(module_files())


def test_no_import_circle_in_the_package(graph):
    assert len(graph) > 50 and "jaxalign.optimize.pipeline" in graph["jaxalign.api"]
    found = cycles(graph)
    detail = "; ".join(" <-> ".join(c) + " (" + ", ".join(
        f"{a} -> {sorted(graph[a] & set(c))}" for a in c) + ")" for c in found)
    assert not found, f"import circles: {detail}"


@pytest.mark.parametrize("lower, upper", [
    ("jaxalign.survey", "jaxalign.model"),
    ("jaxalign.model", "jaxalign.survey"),
    ("jaxalign.model", "jaxalign.prompting"),
    ("jaxalign.model.quantize", "jaxalign.model"),
    ("jaxalign.model.families.base", "jaxalign.model"),
    ("jaxalign.parallel", "jaxalign.model"),
    ("jaxalign.scoring", "jaxalign.api"),
    ("jaxalign.optimize", "jaxalign.api"),
    ("jaxalign.prompting", "jaxalign.scoring"),
    ("jaxalign.prompting", "jaxalign.scoring_pass"),
    ("jaxalign.scoring_pass", "jaxalign.scoring"),
    ("jaxalign.scoring_pass", "jaxalign.evaluate"),
    ("jaxalign.scoring", "jaxalign.evaluate"),
    ("jaxalign.config", "jaxalign.api"),
    ("jaxalign.results", "jaxalign.api"),
    ("jaxalign.progress", "jaxalign.api"),
    ("jaxalign.cli.common", "jaxalign.cli.align"),
])
def test_layers_point_one_way(graph, lower, upper):
    """No module of ``lower`` imports one of ``upper`` (a module is inside a name when it is that
    name or below it; ``jaxalign.model.quantize`` -> ``jaxalign.model``: any other model module)."""
    inside = lambda m, name: m == name or m.startswith(name + ".")  # noqa: E731
    bad = sorted((m, d) for m, deps in graph.items() if inside(m, lower)
                 for d in deps if inside(d, upper) and not inside(d, lower))
    assert not bad, f"{lower} imports {upper}: {bad}"


# ---------------------------------------------------------------------------- packages
def _plant(tmp_path: Path, sources: dict[str, str]) -> dict[str, Path]:
    """A throwaway package ``jaxalign`` under ``tmp_path`` with the given module sources."""
    for name, text in sources.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(tmp_path / "jaxalign")


def test_the_package_checks_find_a_planted_tie_and_a_private_import(tmp_path):
    """Two packages importing each other through different modules (no module-level circle; one
    import inside a function), and a private name imported across them: both checks see them."""
    files = _plant(tmp_path, {
        "jaxalign/__init__.py": "",
        "jaxalign/low/__init__.py": "",
        "jaxalign/low/a.py": "def f():\n    from jaxalign.high.b import g\n    return g\n",
        "jaxalign/high/__init__.py": "",
        "jaxalign/high/b.py": "def g():\n    return 1\n",
        "jaxalign/low/d.py": "_secret = 2\n",
        "jaxalign/high/c.py": "from jaxalign.low.d import _secret, __doc__\nfrom jaxalign.high.b import _own\n",
        "jaxalign/top.py": "from jaxalign.low import a\n",
    })
    graph = import_graph(files)
    assert cycles(graph) == []  # module by module there is no circle
    assert cycles(package_graph(graph)) == [["jaxalign.high", "jaxalign.low"]]
    assert private_imports(files) == [("jaxalign.high.c", "jaxalign.low.d", "_secret")]


def test_no_two_way_tie_between_packages(graph):
    packages = package_graph(graph)
    assert {"jaxalign.model", "jaxalign.optimize", "jaxalign.optimizers", "jaxalign.scoring"} <= set(packages)
    found = cycles(packages)
    detail = "; ".join(" <-> ".join(c) + " (" + ", ".join(
        f"{m} -> {d}" for m in sorted(graph) if room(m) in c
        for d in sorted(graph[m]) if room(d) in c and room(d) != room(m)) + ")" for c in found)
    assert not found, f"packages that import each other: {detail}"


def test_no_private_name_crosses_a_package():
    found = private_imports(module_files())
    assert not found, "private names imported from another package: " + ", ".join(
        f"{m} imports {n} from {src}" for m, src, n in found)
