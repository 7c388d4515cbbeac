"""The import graph of segdet/ and benchmarks/, read from the source (nothing is imported): no cycle between
modules or between packages, no import from a lower layer to a higher one, no task reaching into another task
except the one that composes them, and no script in scripts/ importing another script.

Every import counts, the ones inside functions too: a lazy import is still an arrow. ``python -m
tests.test_layers`` prints the offending edges."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("segdet", "benchmarks")

# Low to high. A module sits on the layer of the longest prefix listed; it may import its own layer or lower.
LAYERS = [
    ("base", ["segdet", "segdet.errors", "segdet.registry", "segdet.config", "segdet.overrides", "segdet.files",
              "segdet.data", "segdet.instances", "segdet.weights", "segdet.malloc", "segdet.plotting",
              "segdet.onnx_export"]),
    ("engine", ["segdet.engine"]),
    ("scenes", ["segdet.scenes"]),
    ("tasks", ["segdet.tasks"]),
    ("features", ["segdet.annotate", "segdet.tools"]),       # built from tasks, started by a command
    ("commands", ["segdet.commands"]),
    ("cli", ["segdet.cli", "segdet.hydra_app", "segdet.sweeps", "segdet.__main__"]),
    ("benchmarks", ["benchmarks"]),
]
# A task made of other tasks' parts may import those tasks; any other task imports none.
COMPOSES = {"detseg": {"sam", "frcnn"}, "semantic": {"sam"}}  # semantic: a decoder on SAM's encoder


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every .py under the packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` names module ``a.b`` where there is one). A module
    that does not exist (yet) is no arrow."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                base = ".".join(parent + ([base] if base else []))
            if base in known:
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return found - {name}


def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports(name, path, set(files)) for name, path in files.items()}


def layer(module: str) -> int:
    best = (-1, -1)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best[0]:
                best = (len(p), rank)
    assert best[1] >= 0, f"{module} is on no layer: add it to LAYERS"
    return best[1]


def package(module: str) -> str:
    """The unit whose cycles count: a task's subpackage, else the first level under the root package."""
    parts = module.split(".")
    if parts[:2] == ["segdet", "tasks"] and len(parts) > 2 and parts[2] in task_names():
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def task_names() -> set[str]:
    return {p.name for p in (ROOT / "segdet" / "tasks").iterdir() if (p / "__init__.py").is_file()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, bs in g.items():
        out.setdefault(package(a), set()).update(package(b) for b in bs if package(b) != package(a))
    return out


def upward(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in g.items() for b in bs if layer(b) > layer(a))


def across_tasks(g: dict[str, set[str]]) -> list[str]:
    tasks = task_names()

    def task(m):
        parts = m.split(".")
        return parts[2] if parts[:2] == ["segdet", "tasks"] and len(parts) > 2 and parts[2] in tasks else None
    return sorted(f"{a} -> {b}" for a, bs in g.items() for b in bs
                  if task(a) and task(b) and task(a) != task(b) and task(b) not in COMPOSES.get(task(a), ()))


def script_imports() -> list[str]:
    """scripts/*.py importing another script (top-level names of scripts/)."""
    names = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    out = []
    for p in sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            out += [f"scripts/{p.name} -> {m}" for m in mods if m.split(".")[0] in names]
    return out


def test_no_module_cycles():
    assert cycles(graph()) == []


def test_no_package_cycles():
    assert cycles(package_graph(graph())) == []


def test_nothing_imports_a_higher_layer():
    assert upward(graph()) == []


def test_a_task_imports_only_the_tasks_it_composes():
    assert across_tasks(graph()) == []


def test_scripts_import_no_other_script():
    assert script_imports() == []


def test_the_checker_sees_an_upward_arrow_and_a_cycle():
    """The checks can fail: a made-up engine → tasks arrow and a two-module cycle are found."""
    g = {"segdet.engine.x": {"segdet.tasks.base"}, "segdet.tasks.base": {"segdet.engine.x"}}
    assert upward(g) == ["segdet.engine.x -> segdet.tasks.base"]
    assert cycles(g) == [["segdet.engine.x", "segdet.tasks.base"]]
    assert across_tasks({"segdet.tasks.sam.a": {"segdet.tasks.detseg.b"}}) == ["segdet.tasks.sam.a -> "
                                                                               "segdet.tasks.detseg.b"]


if __name__ == "__main__":
    g = graph()
    report = {"module cycles": cycles(g), "package cycles": cycles(package_graph(g)), "upward imports": upward(g),
              "imports across tasks": across_tasks(g), "scripts importing scripts": script_imports()}
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports")
    for what, items in report.items():
        print(f"{what}: {len(items)}")
        for item in items:
            print(f"  {item}")
