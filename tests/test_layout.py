"""The package's layering: every import of a fastrnn module points down.

The floors, from the ground up (the layout of the design document, with
streaming below the layers: a stream runs a layer's cells through the
engine and needs nothing of the layer classes, so ``layer.stream()`` is an
import that points down): a module imports modules of lower floors, or of
its own floor (never in a circle); nothing imports ``fastrnn.cli``; and
fastrnn modules are imported at the top of a file, never inside a
function (function-local imports are for optional third-party packages
only: torch, keras, h5py, dask, cupy, onnx, ...).
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "fastrnn")

# (floor, module prefixes); a module takes the floor of its longest prefix
FLOORS = [
    (0, ["fastrnn.activations", "fastrnn.initializers", "fastrnn._device", "fastrnn._nest",
         "fastrnn.serialization", "fastrnn._safe_io", "fastrnn._tf_bundle", "fastrnn._version"]),
    (1, ["fastrnn.kernels"]),
    (2, ["fastrnn.dispatch"]),
    (3, ["fastrnn._engine"]),
    (4, ["fastrnn.cells"]),
    (5, ["fastrnn.streaming"]),
    (6, ["fastrnn.layers"]),
    (7, ["fastrnn.bidirectional"]),
    (8, ["fastrnn.nn"]),
    (9, ["fastrnn.models"]),
    (10, ["fastrnn.interop"]),
    (11, ["fastrnn.io"]),
    (12, ["fastrnn.dask"]),
    (13, ["fastrnn.cli"]),
    (14, ["fastrnn", "fastrnn.__main__"]),
]


def _modules():
    found = {}
    for dirpath, dirnames, files in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, os.path.join(ROOT, ".."))
        package = rel.replace(os.sep, ".")
        for f in files:
            if f.endswith(".py"):
                name = package if f == "__init__.py" else f"{package}.{f[:-3]}"
                found[name] = os.path.join(dirpath, f)
    return found


MODULES = _modules()


def floor(name):
    best, level = -1, None
    for lvl, prefixes in FLOORS:
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, level = len(p), lvl
    assert level is not None, f"{name} has no floor in FLOORS: add it"
    return level


def _resolve(module, node):
    """The fastrnn modules an import statement names."""
    is_package = MODULES[module].endswith("__init__.py")
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "fastrnn"]
    if node.level:
        parts = module.split(".")
        base_parts = parts if is_package else parts[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "fastrnn":
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _imports():
    """``(module, target, line, inside_a_function)`` for every fastrnn import."""
    rows = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        local = {id(n) for fn in funcs for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node):
                    if target != module:
                        rows.append((module, target, node.lineno, id(node) in local))
    return rows


IMPORTS = _imports()


def test_every_module_has_a_floor():
    for name in MODULES:
        floor(name)


def test_imports_point_down():
    upward = [f"{m}:{line} imports {t} (floor {floor(t)} above {floor(m)})"
              for m, t, line, _ in IMPORTS
              if floor(t) > floor(m) and not t.startswith(m + ".")]
    assert not upward, "\n".join(upward)


def test_nothing_imports_the_command_line():
    bad = [f"{m}:{line} imports {t}" for m, t, line, _ in IMPORTS
           if t.startswith("fastrnn.cli") and not m.startswith("fastrnn.cli")
           and m != "fastrnn.__main__"]
    assert not bad, "\n".join(bad)


def test_no_function_local_imports_of_fastrnn():
    bad = [f"{m}:{line} imports {t} inside a function" for m, t, line, local in IMPORTS if local]
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = {}
    for m, t, _, _ in IMPORTS:
        if not t.startswith(m + "."):
            graph.setdefault(m, set()).add(t)
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in list(graph):
        if node not in state:
            visit(node, [node])
