"""The benchmarks are a consumer of the package: read from their source (every import, at module level or inside a
function), they never edit `sys.path`, never import the command-line layer (`ilrec_trl.scripts`) or a private name
of `ilrec_trl`, touch another library's private module state only in `benchmarks/patches.py`, and import each other
without a circle. Every module stays under ~400 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MAX_LINES = 420


def modules() -> dict[str, Path]:
    """{dotted module name: file} of every Python module of the benchmarks package (results excluded)."""
    found = {}
    for path in sorted(BENCHMARKS.rglob("*.py")):
        if "results" in path.relative_to(BENCHMARKS).parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((target, [a.name for a in node.names], node.lineno))
    return out


def test_no_sys_path_edits_no_cli_layer_and_no_private_names():
    problems = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                problems.append(f"{name}:{node.lineno} uses sys.path")
        module_aliases = set()
        for target, names, line in imports(name, path):
            if target.startswith("ilrec_trl.scripts") or (target == "ilrec_trl" and "scripts" in names):
                problems.append(f"{name}:{line} imports the command-line layer ({target})")
            if target.startswith("ilrec_trl") and any(p.startswith("_") for p in target.split(".")):
                problems.append(f"{name}:{line} imports the private module {target}")
            if target.startswith("ilrec_trl") and any(n.startswith("_") for n in names):
                problems.append(f"{name}:{line} imports a private name from {target}")
        for node in ast.walk(tree):  # `import x.y as z` aliases, then `z._private`
            if isinstance(node, ast.Import):
                module_aliases |= {a.asname or a.name.split(".")[0] for a in node.names}
        if path.name != "patches.py":
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                        and getattr(node.value, "id", None) in module_aliases):
                    problems.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}, a library's private "
                                    f"state (only benchmarks/patches.py may, restoring it)")
    assert not problems, "\n".join(problems)


def test_benchmark_modules_import_each_other_without_a_circle():
    mods = modules()
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target, names, _ in imports(name, path):
            for candidate in [target] + [f"{target}.{n}" for n in names]:
                if candidate in mods and candidate != name:
                    edges.add(candidate)
        graph[name] = edges
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import circles: {cycles}"


def test_no_benchmark_module_is_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
