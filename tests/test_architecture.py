"""Rules about the code itself: one place changes an action's state, no import cycles, no
function-level imports in the engine or the admin, and services never import the admin.

Both are read from the source (Python's ``ast``), so a new module that breaks a rule
fails here with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from actions.models import Action

ROOT = Path(__file__).resolve().parent.parent
APPS = ["actions", "budgetradar", "observability", "planning", "platforms", "safety", "scenarios"]
SETTLEMENT = ROOT / "actions" / "services" / "settlement.py"
TRANSITIONS = {
    name
    for name in dir(Action)
    if callable(getattr(Action, name, None)) and hasattr(getattr(Action, name), "_django_fsm")
}


def product_modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def test_the_fsm_has_the_transitions_this_test_looks_for():
    assert {"approve", "start", "succeed", "fail", "release", "start_rollback", "finish_rollback"} <= TRANSITIONS


@pytest.mark.parametrize("module", sorted(product_modules()))
def test_only_the_settlement_module_changes_an_actions_state(module):
    path = product_modules()[module]
    if path == SETTLEMENT or path.name == "models.py" and module.startswith("actions"):
        return
    tree = ast.parse(path.read_text())
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TRANSITIONS:
            receiver = ast.unparse(node.func.value)
            if "action" in receiver.lower():
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {receiver}.{node.func.attr}()")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            receiver = ast.unparse(node.func.value)
            if any(k.arg == "status" for k in node.keywords) and receiver.startswith("Action.objects"):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} updates Action.status directly")
    assert not offences, "\n".join(offences)


def _module_level_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """First-party modules imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    imported = set()
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in known and name != module:
                imported.add(name)
    return imported


def test_product_modules_import_each_other_without_cycles():
    modules = product_modules()
    known = set(modules)
    graph = {name: _module_level_imports(path, name, known) for name, path in modules.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def admin_modules() -> list[Path]:
    """Every admin module: ``<app>/admin.py``, the ``<app>/admin/`` packages and ``admin_base``."""
    return sorted(
        path
        for path in product_modules().values()
        if "admin" in path.parent.relative_to(ROOT).parts or path.stem.startswith("admin")
    )


def _function_level_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines += [inner.lineno for inner in ast.walk(node) if isinstance(inner, ast.Import | ast.ImportFrom)]
    return sorted(set(lines))


def test_the_rules_below_see_every_admin_package():
    names = {str(p.relative_to(ROOT)) for p in admin_modules()}
    assert {"actions/admin/actions.py", "scenarios/admin/scenarios.py", "budgetradar/admin_base.py"} <= names
    assert {p.split("/")[0] for p in names} >= {"actions", "budgetradar", "observability", "planning", "platforms"}


def test_the_engine_and_admin_modules_need_no_function_level_imports():
    """The engine reaches dispatch, rollback, reconcile, tasks and deployments, and the admin
    reaches its services and selectors, without importing inside functions (which used to
    hide an import cycle, and made an admin page fail only when its button was pressed)."""
    paths = [*(ROOT / "actions" / "services").glob("*.py"), *admin_modules()]
    offences = {str(p.relative_to(ROOT)): lines for p in paths if (lines := _function_level_imports(p))}
    assert not offences, offences


def test_services_and_selectors_never_import_the_admin():
    """The admin presents what services decide: it imports them, never the other way round."""
    modules = product_modules()
    admin_names = {name for name, path in modules.items() if path in set(admin_modules())}
    offences = []
    for name, path in modules.items():
        if not (".services" in name or name.endswith(".selectors") or ".selectors." in name):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            offences += [f"{name}:{node.lineno} imports {i}" for i in imported if i in admin_names]
    assert not offences, "\n".join(offences)
