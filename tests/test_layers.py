"""The shape of the house: core stands alone, app and train stand on core and not on each other, and no
module imports itself back through others."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "train", "app")


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (absolute imports; the project uses no relative ones)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_core_imports_neither_app_nor_train_and_they_do_not_import_each_other():
    forbidden = {"core": ("app", "train"), "app": ("train",), "train": ("app",)}
    wrong = sorted(f"{m} -> {t}" for m, targets in imports().items() for t in targets
                   if t.split(".")[0] in forbidden[m.split(".")[0]])
    assert wrong == []


def test_no_import_cycles():
    graph, state, cycles = imports(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
