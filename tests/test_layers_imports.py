"""The package's layers (issue #19): every import between mobilenets modules, read from the source (imports
inside functions too), goes down or sideways, never up, and no modules import each other in a circle;
imports inside functions are for optional dependencies only.

Layers, lowest first: the model builder and its registry (and the tensor names of other libraries); what
stores, describes and feeds models (checkpoint, hub, profile, data, convert, weights); deploy; train; the command
line and the package's top-level API. A module may import its own layer and the ones below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mobilenets

SRC = Path(mobilenets.__file__).parent

LAYERS = (
    ("core", ("mobilenets.layers", "mobilenets.models", "mobilenets.segmentation", "mobilenets.detection",
              "mobilenets.registry", "mobilenets.argtypes", "mobilenets.keynames")),
    ("services", ("mobilenets.checkpoint", "mobilenets.hub", "mobilenets.profile", "mobilenets.data",
                  "mobilenets.convert", "mobilenets.weights", "mobilenets.api")),
    ("deploy", ("mobilenets.deploy",)),
    ("train", ("mobilenets.train",)),
)
# the command line and the API on top: these import everything, nothing imports them (the cli finds the
# command modules by name)
INTERFACE = {"mobilenets", "mobilenets.__main__", "mobilenets.cli", "mobilenets.convert.cli",
             "mobilenets.weights.cli", "mobilenets.train.cli", "mobilenets.deploy.commands"}

# third-party packages of the extras (and heavy parts of torch), imported where they are used so that the
# core runs on torch alone
OPTIONAL = {"onnx", "onnxruntime", "openvino", "torchvision", "matplotlib", "tqdm", "h5py", "timm", "keras",
            "huggingface_hub", "numpy", "torch.utils.tensorboard", "torch._inductor",
            "executorch", "litert_torch", "ai_edge_litert", "coremltools",  # the mobile extra
            "pycocotools"}  # detection metrics (the train extra)

# Known imports inside functions that are not optional dependencies (the CLI commands of convert and weights,
# and what weights fetches through convert); new ones fail.
KNOWN_LAZY = {
    ("mobilenets.checkpoint", "safetensors"), ("mobilenets.checkpoint", "zipfile"),
    ("mobilenets.weights.fetch", "torch.hub"), ("mobilenets.weights.fetch", "urllib.error"),
    ("mobilenets.weights.fetch", "mobilenets.convert"),
    ("mobilenets.weights.cli", "mobilenets.weights"), ("mobilenets.weights.cli", "mobilenets.hub"),
    ("mobilenets.convert.cli", "mobilenets.convert"),
    # a detector is torchvision's SSD: the registry imports its module, which needs torchvision, when it builds one
    ("mobilenets.registry", "mobilenets.detection.models"),
}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _imports(modules) -> list[tuple[str, str, int, bool]]:
    """(importer, imported, line, inside a function) for every import in the package; a mobilenets name is
    resolved to the module it names (``from . import timm`` imports ``convert.timm``, not ``convert``)."""
    found = []
    for name, (path, package) in modules.items():
        here = name.split(".") if package else name.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target.startswith("mobilenets"):
                    while target not in modules:
                        target = target.rsplit(".", 1)[0]
                if target != name:
                    found.append((name, target, node.lineno, id(node) in in_function))
    return found


def _layer(module: str) -> int:
    if module in INTERFACE:
        return len(LAYERS)
    best = max(((len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best[1]


def _internal_edges():
    modules = _modules()
    return modules, [(a, b, line, lazy) for a, b, line, lazy in _imports(modules) if b in modules]


def test_the_reader_sees_the_imports_it_must():
    """The checks below rely on the import reader: it finds imports inside functions, resolves relative
    ones to modules, and the layers cover every module."""
    modules, edges = _internal_edges()
    pairs = {(a, b) for a, b, _, _ in edges}
    assert ("mobilenets.train.trainer", "mobilenets.train.config") in pairs
    assert ("mobilenets.convert", "mobilenets.convert.timm") in pairs
    assert ("mobilenets.api", "mobilenets.checkpoint") in pairs and ("mobilenets.api", "mobilenets") not in pairs
    assert any((a, b) == ("mobilenets.weights.fetch", "mobilenets.convert") and lazy for a, b, _, lazy in edges)
    assert {_layer(m) for m in modules} == set(range(len(LAYERS) + 1))


def test_no_module_imports_a_layer_above_its_own():
    _, edges = _internal_edges()
    upward = sorted(f"{a}:{line} imports {b} ({LAYERS[_layer(b)][0] if _layer(b) < len(LAYERS) else 'interface'})"
                    for a, b, line, _ in edges if _layer(b) > _layer(a))
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_deploy_does_not_import_train():
    _, edges = _internal_edges()
    assert not [(a, b) for a, b, _, _ in edges if a.startswith("mobilenets.deploy") and b.startswith("mobilenets.train")]


def _packages_run_by(importer: str, imported: str) -> list[str]:
    """The packages whose ``__init__`` Python runs to import ``imported`` from ``importer``: those above it,
    except the importer's own (already being imported) and the top one."""
    parts = imported.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(2, len(parts)))
            if importer != p and not importer.startswith(p + ".")]


def test_packages_run_by_an_import():
    assert _packages_run_by("mobilenets.checkpoint", "mobilenets.convert.timm") == ["mobilenets.convert"]
    assert _packages_run_by("mobilenets.convert.core", "mobilenets.convert.timm") == []
    assert _packages_run_by("mobilenets.api", "mobilenets.checkpoint") == []


def test_modules_import_each_other_in_no_circle():
    """Importing ``a.b.c`` runs ``a.b``'s ``__init__`` first: checkpoint importing a module of convert, whose
    package imports checkpoint, is a circle even when that module itself imports nothing of checkpoint."""
    _, edges = _internal_edges()
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).update([b, *_packages_run_by(a, b)])
    # depth-first search; a grey node met again closes a circle
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not circles, "modules that import each other in a circle:\n" + "\n".join(circles)


def test_known_exceptions_are_still_needed():
    """An exception that no longer matches an import goes from the list (so the list only shrinks)."""
    modules = _modules()
    imports = _imports(modules)
    lazy = {(a, b) for a, b, _, is_lazy in imports if is_lazy}
    assert not {k for k in KNOWN_LAZY if not any(a == k[0] and (b == k[1] or b.startswith(k[1] + "."))
                                                 for a, b in lazy)}


def test_imports_inside_functions_are_for_optional_dependencies():
    modules = _modules()
    misplaced = sorted(
        f"{a}:{line} imports {b}" for a, b, line, lazy in _imports(modules)
        if lazy and not any(b == o or b.startswith(o + ".") for o in OPTIONAL)
        and not any(a == k[0] and (b == k[1] or b.startswith(k[1] + ".")) for k in KNOWN_LAZY)
    )
    assert not misplaced, "imports inside functions of packages that are always there:\n" + "\n".join(misplaced)
