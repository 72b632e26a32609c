"""The layout is the architecture: layers, no import cycles, small kernel signatures.

Read from the source with ``ast`` (imports inside functions count), so a cycle or an
upward import cannot hide behind a lazy import.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "winit_sim")

# rank of each module (by dotted name under winit_sim, or its package); a module may
# import only from modules of a lower rank or, without cycles, of its own
LAYERS = [
    ("spec machinery", ["registry", "checks", "cache"]),
    ("registries", ["activations", "inits", "layers"]),
    ("kernels", ["kernels"]),
    ("theory", ["theory"]),
    ("engine", ["engine"]),
    ("api", ["simulate", "training", "spectrum"]),
    ("sweeps", ["sweep"]),
    ("reports", ["report"]),
    ("bridge", ["torch"]),
    ("command line", ["cli", "__main__"]),
]
KERNEL_PARAMS_MAX = 12
# what kernels may import from outside the package: arithmetic only
KERNEL_EXTERNAL = {"math", "numpy", "numba", "numba.extending", "collections"}


def _modules():
    out = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith("__")]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                name = rel[:-len(".__init__")] if rel.endswith("__init__") else rel
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    out[name if name != "__init__" else ""] = ast.parse(fh.read())
    return out


MODULES = _modules()


def _package(name, tree_is_package):
    return name if tree_is_package else name.rpartition(".")[0]


def _imports(name):
    """(module imported, names imported from it) for every import in a module, anywhere."""
    tree = MODULES[name]
    is_pkg = name == "" or os.path.exists(os.path.join(ROOT, *name.split("."), "__init__.py"))
    base = _package(name, is_pkg)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "winit_sim" or a.name.startswith("winit_sim."):
                    yield a.name[len("winit_sim."):] if "." in a.name else "", []
                else:
                    yield "!" + a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module
                if mod == "winit_sim" or mod.startswith("winit_sim."):
                    mod = mod[len("winit_sim."):] if "." in mod else ""
                else:
                    yield "!" + mod, [a.name for a in node.names]
                    continue
            else:
                parts = base.split(".") if base else []
                parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                mod = ".".join(parts + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            submodules = [f"{mod}.{n}".strip(".") for n in names
                          if f"{mod}.{n}".strip(".") in MODULES]
            plain = [n for n in names if f"{mod}.{n}".strip(".") not in MODULES]
            if plain or not submodules:
                yield mod, plain
            for sub in submodules:
                yield sub, []


def _graph():
    """Edges between package modules, with the subpackage __init__s Python runs on the way
    (the top package's __init__ is the public facade: nothing may import it)."""
    edges = {}
    for name in MODULES:
        deps = set()
        for mod, _ in _imports(name):
            if mod.startswith("!"):
                continue
            deps.add(mod)
            parts = mod.split(".")
            # the packages Python initialises on the way, except this module's own
            # (already initialised when it runs)
            deps.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                        if not (name == p or name.startswith(p + ".")))
        deps.discard(name)
        edges[name] = deps
    return edges


def _rank(name):
    top = name.split(".")[0]
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"module winit_sim.{name} is in no layer of LAYERS")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name:
            _rank(name)


def test_no_module_imports_the_package_facade():
    for name, deps in _graph().items():
        assert "" not in deps or name == "", f"winit_sim.{name} imports the package __init__"


def test_imports_go_down_the_layers():
    bad = [f"winit_sim.{name} ({LAYERS[_rank(name)][0]}) imports winit_sim.{dep} "
           f"({LAYERS[_rank(dep)][0]})"
           for name, deps in _graph().items() if name for dep in deps
           if dep and _rank(dep) > _rank(name)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges = _graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(f"winit_sim.{m}" for m in cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_no_private_names_cross_modules():
    bad = []
    for name in MODULES:
        for mod, names in _imports(name):
            bad += [f"winit_sim.{name} imports {n} from {mod.lstrip('!')}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
        aliases = {n.asname or n.name for node in ast.walk(MODULES[name])
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for n in node.names}
        for node in ast.walk(MODULES[name]):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"winit_sim.{name} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_kernels_import_arithmetic_only():
    for name in MODULES:
        if name.split(".")[0] == "kernels":
            for mod, _ in _imports(name):
                if mod.startswith("!"):
                    assert mod[1:] in KERNEL_EXTERNAL, f"winit_sim.{name} imports {mod[1:]}"


def test_no_kernel_takes_more_than_a_dozen_parameters():
    bad = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                n = len(node.args.args) + len(node.args.posonlyargs)
                limit = KERNEL_PARAMS_MAX if name.startswith("kernels") else KERNEL_PARAMS_MAX + 1
                if n > limit:
                    bad.append(f"winit_sim.{name}.{node.name}: {n} positional parameters")
    assert not bad, "\n".join(bad)
