"""The package's layers: every import runs down (or within a subpackage), none up, and no module circle.

Ranks follow the data flow: shared basics, then the compiled pieces and quantization grids, storage, model
loading and data, one-shot pruning, sparse execution, training, measurement, and the edge (the run as a
library call, the CLI). Imports inside functions count too.
"""

import ast
import graphlib
from pathlib import Path

import pytest

import prunekit

ROOT = Path(prunekit.__file__).parent
RANKS = {
    "errors": 0, "settings": 0,
    "selection": 1, "fsutil": 1, "devices": 1, "timing": 1, "targets": 1, "hessian": 1,
    "native": 2, "quant": 2,
    "store": 3,
    "models": 4, "data": 4,
    "oneshot": 5,
    "run": 6,
    "train": 7,
    "measure": 8,
    "pipeline": 9, "recovery": 9, "shipping": 9, "cli": 9, "__init__": 10, "__main__": 10,
}


def _modules() -> dict[str, set[str]]:
    """Every prunekit module (dotted, without the ``prunekit.`` prefix) and the prunekit modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                deps |= {".".join([*target, a.name]) if not node.module else ".".join(target) for a in node.names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                deps |= {n.removeprefix("prunekit.") for n in names if n.startswith("prunekit.")}
        graph[name] = {d for d in deps if d}
    return graph


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_every_module_has_a_rank():
    assert {_layer(m) for m in _modules()} <= set(RANKS)


def test_no_import_runs_up():
    up = [f"{m} -> {d}" for m, deps in _modules().items() for d in deps
          if _layer(d) != _layer(m) and RANKS[_layer(d)] > RANKS[_layer(m)]]
    assert not up, "imports up the layers:\n" + "\n".join(sorted(up))


def test_no_module_circle():
    graph = _modules()
    known = set(graph)

    def resolve(dep: str) -> str | None:  # "quant.grid.LayerGrid" -> "quant.grid"; a package -> its __init__
        while dep and dep not in known and f"{dep}.__init__" not in known:
            dep = dep.rpartition(".")[0]
        return dep if dep in known else (f"{dep}.__init__" if dep else None)

    edges = {m: {r for d in deps if (r := resolve(d)) and r != m and not r.endswith("__init__")}
             for m, deps in graph.items()}
    try:
        list(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import circle: {' -> '.join(e.args[1])}")
