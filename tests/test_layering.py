"""The package's layers: the storage engines know nothing of the wire protocol, the client or
the broker; the embedded log on the Rust engine loads neither the pure-Python engine nor the
broker's stack; and no two modules import each other at module level."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tidelog

PACKAGE = Path(tidelog.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path, *, module_level_only: bool) -> set[str]:
    """The tidelog modules ``path`` imports (module level only: outside functions and
    ``if TYPE_CHECKING`` blocks). ``from pkg import submodule`` depends on the submodule."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and module_level_only:
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("tidelog"):
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.add(sub if is_module(sub) else str(child.module))
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("tidelog"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_storage_imports_nothing_of_the_protocol_client_or_broker():
    for path in sorted((PACKAGE / "storage").glob("*.py")):
        bad = {
            m
            for m in imports(path, module_level_only=False)
            if m.split(".")[1] in ("client", "protocol", "broker")
        }
        assert not bad, f"{module_name(path)} imports {sorted(bad)}"


def test_the_embedded_log_on_rust_loads_only_what_it_uses(tmp_path):
    code = f"""
import json, sys, tidelog
with tidelog.Log.open({str(tmp_path / "t-0")!r}, engine="rust") as log:
    log.append([(b"k", b"v")])
    assert [r.value for r in log.read(0)] == [b"v"]
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    unwanted = {"trio", "tidelog.client", "tidelog.protocol", "tidelog.broker"} | {
        f"tidelog.storage.{m}" for m in ("log", "segment", "index", "batch")
    }
    assert not loaded & unwanted, sorted(loaded & unwanted)


def test_no_import_cycles_at_module_level():
    # Importing a module initialises its parent packages first: those edges are implicit.
    graph = {
        name: {m for m in imports(p, module_level_only=True) if m != name and not name.startswith(m + ".")}
        for p in PACKAGE.rglob("*.py")
        if (name := module_name(p))
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
