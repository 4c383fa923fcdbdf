"""The house rules that keep improv easy to change: the daemon loads no developer tool, and no module of
improv imports another that imports it back."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "improv"


def test_improv_run_loads_no_developer_tool():
    # What `improv run` imports on its way to the daemon (the JACK client is loaded when JACK is used).
    probe = ("import sys, improv.cli, improv.daemon, improv.midi.backend, improv.midi.jack, improv.model; "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('improv'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "improv.daemon" in loaded
    assert not [m for m in loaded if m.startswith("improv.tools")], loaded


def imports_of(path: Path) -> set[str]:
    """Every improv module a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("improv"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("improv"))
    return found


def test_no_import_circle_in_improv():
    modules = {".".join(("improv", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ is imported on the way to any of its modules: count that edge too.
    for name in modules:
        parent = name.rpartition(".")[0]
        for module in list(graph[name]):
            if module.startswith(parent + ".") and parent in modules and parent != "improv":
                graph[name].add(parent)

    def circle_from(start):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for c in (circle_from(name) for name in sorted(graph)) if c]
    assert not circles, f"import circle: {' -> '.join(circles[0])}"
