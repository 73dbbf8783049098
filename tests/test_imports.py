"""No import cycle inside the edgetune package, checked statically (``ast``, nothing imported).

Every module of the installed tree (``edgetune/``, and ``export/`` and ``devices/`` under their
``package-dir`` names from pyproject.toml) is parsed; an edge a → b is an import of b that runs
when a is imported: anything outside a function body, ``if TYPE_CHECKING:`` blocks included (a
cycle hidden there is still two modules that each need the other). ``import a.b.c`` and ``from
a.b import c`` count as an edge to the module they name (a.b.c when c is a submodule, else
a.b), plus an edge to each parent package Python initialises on the way that the importing
module is not itself inside (importing edgetune.caps.planner from edgetune.train runs
edgetune/caps/__init__.py first, and whatever that imports); a package ``__init__`` may
re-export its own submodules. The strongly connected components of that graph must all be
single modules without a self-edge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """Top-level mapping of package names to folders: pyproject's ``package-dir``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package) for every .py file under the mapped folders."""
    out: dict[str, tuple[Path, bool]] = {}
    dirs = package_dirs()
    for name, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith(".") or part == "__pycache__" for part in rel):
                continue
            is_pkg = rel[-1] == "__init__"
            dotted = ".".join((name, *(rel[:-1] if is_pkg else rel)))
            # a folder mapped on its own (edgetune.export) wins over the same path found
            # through its parent's folder, which it is not part of anyway
            if dotted in out and dotted not in dirs:
                continue
            out[dotted] = (path, is_pkg)
    return out


def _import_time_nodes(tree: ast.AST):
    """Import nodes that run when the module runs: all but those inside a def or lambda."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, is_pkg) in known.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node in _import_time_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            for target in targets:
                while target and target not in known:  # `import pkg.mod` names pkg.mod
                    target = target.rpartition(".")[0]
                if target:
                    graph[name].add(target)
                    parent = target.rpartition(".")[0]
                    while parent and parent in known and not _inside(name, parent):
                        graph[name].add(parent)
                        parent = parent.rpartition(".")[0]
    return graph


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm, iterative); each as a cycle a → b → … → a through the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(_cycle_through(graph, set(component)))
    return found


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle inside a strongly connected component: a shortest path back to its start."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                todo.append(nxt)
    raise AssertionError(f"not a strongly connected component: {sorted(component)}")


def test_the_checker_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]


def test_importing_a_submodule_runs_its_package_init():
    graph = import_graph()
    # edgetune.engine_caps imports edgetune.caps.cost_model: edgetune/caps/__init__.py runs
    assert "edgetune.caps" in graph["edgetune.engine_caps"]
    assert "edgetune.train" not in graph["edgetune.train.engines"]  # its own package


def test_the_graph_sees_the_whole_package():
    graph = import_graph()
    assert {"edgetune", "edgetune.cli", "edgetune.export", "edgetune._devices"} <= set(graph)
    assert "edgetune.errors" in graph["edgetune.config"]


def test_every_package_is_installed():
    """pyproject's ``packages`` lists every package found (a missing one would not install)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {name for name, (_, is_pkg) in modules().items() if is_pkg}
    assert found == set(config["packages"])


def test_no_import_cycle_inside_edgetune():
    found = cycles(import_graph())
    assert not found, "import cycles (module-level imports):\n" + "\n".join(
        " -> ".join(c) for c in found)


# The training loop sits on top: what it drives never imports it back at import time.
BELOW_TRAIN = ("edgetune.runtime", "edgetune.caps", "edgetune.schedule", "edgetune.data",
               "edgetune.sensors", "edgetune.engine_caps", "edgetune.optim_config")


def test_nothing_below_the_training_loop_imports_it():
    graph = import_graph()
    up = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                if any(_inside(a, low) for low in BELOW_TRAIN) and _inside(b, "edgetune.train"))
    assert not up, "imports that run back up into edgetune.train:\n" + "\n".join(up)
