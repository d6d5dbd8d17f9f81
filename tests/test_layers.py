"""The package graph stays layered and acyclic: certs <- um <- edge roles <- edge.node (the one root).

Every import statement of every module counts, function-level ones too (a
lazy import is still a dependency); only `if TYPE_CHECKING:` blocks are left
out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("certs", "um", "edge")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            modules[_module_name(path)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        graph[name] = {target for target in imported if target in modules and target != name}
    return graph


GRAPH = _graph()


def _violations(rule: str, source: str, forbidden: str, exempt: str | None = None) -> list[str]:
    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [f"{rule}: {module} imports {target}" for module, targets in sorted(GRAPH.items())
            if inside(module, source) and not (exempt and inside(module, exempt))
            for target in sorted(targets) if inside(target, forbidden)]


def test_the_graph_covers_the_packages() -> None:
    assert {"certs.pki", "um.sip.parser", "edge.turn.engine", "edge.msturn.server", "edge.node.build"} <= set(GRAPH)
    assert "edge.turn.engine" in GRAPH["edge.node.edge_roles"]  # the analysis sees real edges


@pytest.mark.parametrize(("rule", "source", "forbidden", "exempt"), [
    ("the TURN engine takes its dialects injected", "edge.turn", "edge.msturn", None),
    ("the TURN engine takes its kernel fast path injected", "edge.turn", "edge.offload", None),
    ("the UM roles sit below the edge", "um", "edge", None),
    ("certs imports nothing of ours", "certs", "um", None),
    ("certs imports nothing of ours", "certs", "edge", None),
    ("only the composition root composes", "edge", "edge.node", "edge.node"),
])
def test_layer_rule(rule: str, source: str, forbidden: str, exempt: str | None) -> None:
    assert _violations(rule, source, forbidden, exempt) == []


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    assert cycles == []
