"""The package's layers (../shared/DESIGN.md, README "Layout") as a rule that stays true: a module
imports only from a lower layer or from its own package, no import circle exists, and no
function-level import of inkfuse code hides one (the CLI alone defers imports, so that building
its parser does not load PyTorch). `import inkfuse.config` loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "inkfuse"

# Lower rank = lower layer. Parts of one layer that depend on each other get ranks in that
# order (text encoders produce diffusion Conditions; editing builds on the sampling glue).
RANKS = {
    "inkfuse": 0,  # the core: errors, io (atomic writes), runtime, lazy package faces
    "inkfuse.config": 1,
    "inkfuse.data": 2.0, "inkfuse.nn": 2.1, "inkfuse.viz": 2.2,
    "inkfuse.diffusion": 3.0, "inkfuse.text": 3.1,
    "inkfuse.artifacts": 4,
    "inkfuse.pipelines": 5.0, "inkfuse.editing": 5.1, "inkfuse.attention": 5.2,
    "inkfuse.metrics": 6,
    "inkfuse.train": 7,
    "inkfuse.play": 7.5,  # the browser playground: an app on the pipelines, served by the CLI
    "inkfuse.cli": 8,
}
DEFERRED_OK = ("inkfuse.cli",)  # packages allowed function-level imports of inkfuse modules


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package(module: str) -> str:
    """The layer unit of a module: `inkfuse.diffusion.samplers.ddim` -> inkfuse.diffusion."""
    parts = module.split(".")
    top = ".".join(parts[:2])
    return top if top in RANKS else "inkfuse"


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported inkfuse module, inside a function?, line) for every import in `path`."""
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree)
                   if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                   for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(n, id(node) in in_function, node.lineno) for n in names
                  if n == "inkfuse" or n.startswith("inkfuse.")]
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def test_every_package_has_a_layer() -> None:
    assert {package(m) for m in MODULES} <= set(RANKS)
    assert all(package(m) != "inkfuse" or m.count(".") <= 1 for m in MODULES)


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for name, path in MODULES.items():
        src = package(name)
        for target, _, line in imports(path):
            dst = package(target)
            if dst != src and RANKS[dst] >= RANKS[src]:
                wrong.append(f"{path.relative_to(SRC.parent)}:{line} {src} -> {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_function_level_imports_outside_the_cli() -> None:
    deferred = [f"{path.relative_to(SRC.parent)}:{line} imports {target}"
                for name, path in MODULES.items() if not name.startswith(DEFERRED_OK)
                for target, inside, line in imports(path) if inside]
    assert not deferred, "function-level imports (move them up, or fix the layering):\n" + \
        "\n".join(deferred)


def test_no_import_cycles() -> None:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in imports(path):
            while target and target not in MODULES:  # `from pkg.mod import name` -> pkg.mod
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_config_layer_is_torch_free() -> None:
    code = ("import sys, inkfuse.config, inkfuse; inkfuse.__version__; "
            "assert 'torch' not in sys.modules, 'inkfuse.config imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
