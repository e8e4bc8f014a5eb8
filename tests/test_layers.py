"""The layering of docs/architecture.rst holds: each module imports only earlier layers."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sparse_rec"

# In the order of the Architecture page (module paths below sparse_rec); a
# module may import its own layer, earlier layers and the helpers.
LAYERS = [
    ["_kernels"],
    ["_table"],
    ["_dsl"],
    ["backends"],
    ["_mf.scoring", "_ncf.scoring", "_vae.scoring", "_lightgcn.scoring"],
    ["_base", "_training"],
    ["_mf.estimator", "_ncf.estimator", "_vae.estimator", "_lightgcn.estimator", "_mf", "_ncf",
     "_vae", "_lightgcn"],
    ["_registry", "_io", "serving", "cli", "ann"],
]
HELPERS = {"_threads", "_validation", "_recommend", "_workflows", "exceptions", "metrics",
           "model_selection", "datasets", "preprocessing", "interop"}
# ``est.save`` (in _base) writes through the model-file layer, on call.
ALLOWED = {("_base", "_io")}


def _layer(module):
    """Rank of the layer holding ``module`` (longest matching prefix), or None."""
    best, rank = -1, None
    for r, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), r
    return rank


def _module_of(path):
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts, parts[-1] == "__init__"


def _package_imports(path):
    """Modules below sparse_rec that ``path`` imports, as dotted paths."""
    parts, is_pkg = _module_of(path)
    package = parts if is_pkg else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("sparse_rec."):
                mod = node.module.split(".")[1:]
            else:
                continue
            # ``from .x import y`` may import submodule y: count both.
            out.add(".".join(mod))
            out.update(".".join(mod + [a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(".".join(a.name.split(".")[1:]) for a in node.names
                       if a.name.startswith("sparse_rec."))
    return {m for m in out if m}


def test_modules_import_only_earlier_layers_and_helpers():
    bad = []
    for path in PKG.rglob("*.py"):
        parts, _ = _module_of(path)
        own = ".".join(parts)
        rank = _layer(own)
        if rank is None:
            continue
        for dep in _package_imports(path):
            top = dep.split(".")[0]
            dep_rank = _layer(dep)
            if top in HELPERS or dep_rank is None or (parts[0], top) in ALLOWED:
                continue
            if dep_rank > rank:
                bad.append(f"{own} imports {dep}")
    assert not bad, bad


def test_the_layer_check_sees_imports():
    # The check above would pass vacuously if it read no import.
    deps = _package_imports(PKG / "_mf" / "estimator.py")
    assert {"_training", "_mf.scoring", "backends"} <= deps
