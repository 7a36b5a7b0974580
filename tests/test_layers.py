"""The package's layers, read statically from the source (no import runs; imports inside functions
count too):

- the engine (graph/, importance/, pruning/) imports only itself and the shared top-level modules
  (errors, text, progress, choices, declare, atomic, runtimes, ...), and nothing it reaches imports
  ultralytics: it prunes any PyTorch model;
- the shared top-level modules import only each other;
- yolo/ (the Ultralytics seam) imports no workflows/, reports/ or cli/;
- reports/ (rendering) imports no workflows/ and no cli/: it draws results it is handed;
- nothing outside cli/ imports cli/;
- only yolo/, workflows/ and cli/ import ultralytics.

The engine's strings name fields, never `--flags` (tests/test_options.py)."""

from __future__ import annotations

import ast

from test_imports import PACKAGE, import_graph, modules, runtime_imports

ENGINE = ("graph", "importance", "pruning")
ULTRALYTICS_USERS = ("yolo", "workflows", "cli")


def layer(module: str) -> str:
    """The layer of a dotted module name: its sub-package, "shared" for a top-level module, "" for the
    package itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    known = modules(PACKAGE.parent, "yoloprune")
    return parts[1] if f"yoloprune.{parts[1]}" in known and (PACKAGE / parts[1]).is_dir() else "shared"


GRAPH = import_graph(PACKAGE.parent, "yoloprune", lazy=True)
LAYERS = {m: layer(m) for m in GRAPH}


def imports_across(importers: set[str], forbidden: set[str]) -> list[str]:
    """Every "importer -> imported" where an importer's layer is in `importers` and the imported
    module's layer is in `forbidden`."""
    return sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if LAYERS[m] in importers
        for t in targets
        if LAYERS[t] in forbidden
    )


def imports_ultralytics(module: str) -> bool:
    path = modules(PACKAGE.parent, "yoloprune")[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in runtime_imports(tree, lazy=True):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(n.split(".")[0] == "ultralytics" for n in names):
            return True
    return False


def test_every_module_has_a_layer():
    assert {LAYERS[m] for m in GRAPH} >= {*ENGINE, "yolo", "workflows", "reports", "cli", "shared"}


def test_the_engine_imports_only_itself_and_the_shared_modules():
    others = {lay for lay in LAYERS.values()} - {*ENGINE, "shared"}
    assert imports_across(set(ENGINE), others) == []


def test_the_shared_modules_import_no_package():
    assert imports_across({"shared"}, set(LAYERS.values()) - {"shared"}) == []


def test_nothing_the_engine_reaches_imports_ultralytics():
    reached, todo = set(), [m for m in GRAPH if LAYERS[m] in ENGINE]
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo.extend(GRAPH[m])
    assert len(reached) > 20
    assert sorted(m for m in reached if imports_ultralytics(m)) == []


def test_the_ultralytics_seam_imports_no_workflow_report_or_cli():
    assert imports_across({"yolo"}, {"workflows", "reports", "cli"}) == []


def test_reports_import_no_workflow_and_no_cli():
    assert imports_across({"reports"}, {"workflows", "cli"}) == []


def test_only_the_cli_imports_the_cli():
    assert imports_across(set(LAYERS.values()) - {"cli"}, {"cli"}) == []


def test_only_the_seam_the_workflows_and_the_cli_import_ultralytics():
    users = sorted(m for m in GRAPH if imports_ultralytics(m))
    assert users and all(LAYERS[m] in ULTRALYTICS_USERS for m in users), users


def test_the_layers_are_read_from_the_source():
    assert LAYERS["yoloprune.pruning.plan"] == "pruning" and LAYERS["yoloprune.errors"] == "shared"
    assert LAYERS["yoloprune.cli"] == "cli" and LAYERS["yoloprune"] == ""
    assert "yoloprune.pruning.plan" in GRAPH["yoloprune.pruning.choose"]
