"""How yoloprune's modules import each other, read statically from their source (no import runs):
no import cycles (neither among the imports that run when a module loads nor through imports inside
functions), and no `_private` name imported from another module (a helper that several modules share
is a public name of a public module)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "yoloprune"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `src`, by dotted name."""
    return {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.Module, lazy: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module loads (its body, `if`/`try`/`with` blocks, class bodies)
    and, with `lazy`, those inside functions too; never those under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        elif lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[tuple[str, str]]:
    """(module, name) for each name `node` imports; name is "" for `import module`."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, ""
        return
    base = node.module or ""
    if node.level:  # relative: resolved against the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    for alias in node.names:
        yield base, alias.name


def import_graph(src: Path, package: str, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports when it loads (with `lazy`: at any time);
    `from pkg import submodule` counts as importing the submodule."""
    known = modules(src, package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in runtime_imports(tree, lazy):
            for base, alias in imported(node, name, path.name == "__init__.py"):
                target = f"{base}.{alias}" if f"{base}.{alias}" in known else base
                if target in known and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_a_cycle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        v = frontier.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                frontier.append(w)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected set


def private_imports(files: dict[str, Path], known: dict[str, Path]) -> list[str]:
    """Every `from <module> import _name` (anywhere in a file, lazy imports too) where <module> is one
    of `known` and `_name` is not a module itself: "file:line: from module import _name"."""
    found = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            for base, alias in imported(node, name, path.name == "__init__.py"):
                private = alias.startswith("_") and not alias.startswith("__")
                if private and base in known and f"{base}.{alias}" not in known:
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(f"{where}:{node.lineno}: from {base} import {alias}")
    return found


def test_no_import_cycles_among_yoloprune_modules():
    graph = import_graph(PACKAGE.parent, "yoloprune")
    assert len(graph) > 50 and graph["yoloprune.yolo.safe"]  # the walk sees the package
    assert cycles(graph) == []


def test_no_import_cycles_through_imports_inside_functions():
    """A lazy import keeps `yoloprune --help` light; it is no way around a cycle: a name two modules
    need goes to a module both can import."""
    assert cycles(import_graph(PACKAGE.parent, "yoloprune", lazy=True)) == []


def test_no_private_name_is_imported_from_another_module():
    known = modules(PACKAGE.parent, "yoloprune")
    benchmarks = {f"benchmarks.{p.stem}": p for p in sorted((ROOT / "benchmarks").glob("*.py"))}
    assert private_imports({**known, **benchmarks}, known) == []


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_checks_find_a_cycle_and_a_private_import(tmp_path):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import helper\n",
            "pkg/b.py": "from . import c\n",
            "pkg/c.py": "import pkg.a\n\ndef lazy():\n    from pkg.d import _hidden\n",
            "pkg/d.py": "import typing\nif typing.TYPE_CHECKING:\n    import pkg.a\n_hidden = 1\n",
            "pkg/e.py": "from pkg import _private_module\n\ndef lazy():\n    import pkg.f\n",
            "pkg/f.py": "def lazy():\n    from pkg import e\n",
            "pkg/_private_module.py": "",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg._private_module"}  # lazy, TYPE_CHECKING
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    lazy = import_graph(tmp_path, "pkg", lazy=True)
    assert lazy["pkg.c"] == {"pkg.a", "pkg.d"} and lazy["pkg.d"] == set()
    assert cycles(lazy) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"], ["pkg.e", "pkg.f", "pkg.e"]]
    known = modules(tmp_path, "pkg")
    assert [s.split(": ", 1)[1] for s in private_imports(known, known)] == ["from pkg.d import _hidden"]
