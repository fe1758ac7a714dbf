"""The shape of the package: data flows one way between the rooms, no import cycle inside a room
(function-level and TYPE_CHECKING imports included: a cycle hidden in a function is still a
cycle), no module past 400 lines, and each command a thin shell around one task."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "p4q_export"
# lower rooms never import higher ones (tasks/ hold each command's logic; commands/ and cli.py sit
# on top of everything)
LAYERS = ["data", "models", "quant", "p4q", "deploy", "runtime", "bench", "tasks", "commands"]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _from_target(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` in module `name` (file `path`) reads."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project modules it imports anywhere in its body."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _from_target(name, path, node)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    edges[name].add(full if full in mods else target)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names)
        edges[name] = {t for t in edges[name] if t in mods and t != name}
    return edges


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_no_import_cycle_inside_a_package():
    mods = _modules()
    edges = _imports(mods)
    cycles = []
    for start in mods:
        package = start.rsplit(".", 1)[0]
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt.rsplit(".", 1)[0] != package or nxt == package:
                    continue
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, cycles[:5]


def test_rooms_import_only_downward():
    edges = _imports(_modules())
    wrong = []
    for module, targets in edges.items():
        room = _room(module)
        for target in targets:
            other = _room(target)
            if room in LAYERS and other in LAYERS and LAYERS.index(other) > LAYERS.index(room):
                wrong.append(f"{module} -> {target}")
            if target == "p4q_export.cli" or (other == "commands" and room != "commands" and module != "p4q_export.cli"):
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def _called_tasks(fn: ast.FunctionDef, tasks: dict[str, str], task_modules: dict[str, tuple[str, set[str]]]) -> set[str]:
    """The task functions `fn`'s body calls (its lambdas included), by their full names."""
    called = set()
    for node in (n for stmt in fn.body for n in ast.walk(stmt)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in tasks:
            called.add(tasks[f.id])
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in task_modules \
                and f.attr in task_modules[f.value.id][1]:
            called.add(f"{task_modules[f.value.id][0]}.{f.attr}")
    return called


def test_each_command_calls_exactly_one_task():
    """A command parses its options, calls one task (tasks/) and prints the result: a check or a
    step written in a command, or a second task chained there, is logic the library's callers and
    the tests cannot reach. The helpers beside a command (its human output) call no task."""
    mods = _modules()
    functions = {name: {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
                 for name, path in mods.items() if name.startswith("p4q_export.tasks.")}
    wrong, seen = [], 0
    for name, path in mods.items():
        if not name.startswith("p4q_export.commands.") or name.rsplit(".", 1)[1].startswith("_"):
            continue
        tree = ast.parse(path.read_text())
        tasks: dict[str, str] = {}  # local name → task function
        task_modules: dict[str, tuple[str, set[str]]] = {}  # local name of a tasks module → (module, its functions)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _from_target(name, path, node)
                for alias in node.names:
                    local = alias.asname or alias.name
                    if f"{target}.{alias.name}" in functions:
                        task_modules[local] = (f"{target}.{alias.name}", functions[f"{target}.{alias.name}"])
                    elif alias.name in functions.get(target, ()):
                        tasks[local] = f"{target}.{alias.name}"
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            called = _called_tasks(fn, tasks, task_modules)
            command = not fn.name.startswith("_")
            seen += command
            if len(called) != (1 if command else 0):
                wrong.append(f"{name}.{fn.name} calls {sorted(called) or 'no task'}")
    assert seen >= 9  # every command module was read
    assert not wrong, wrong


def test_modules_stay_under_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_product_package_never_imports_the_lab_benchmarks():
    """benchmarks/ (scale, tower matrix, cache speed-up, `make bench`) drives the package as a user
    does and is not installed with it: nothing in p4q_export may import it."""
    lab = PACKAGE.parent / "benchmarks"
    assert (lab / "scale.py").is_file() and not (PACKAGE / "bench" / "scale.py").exists()
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n == "benchmarks" or n.startswith("benchmarks.") for n in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert not importers
    long = {p.name: n for p in lab.glob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
