"""The layering of docs/architecture.rst holds: each module imports only earlier layers."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sparse_rec"

# In the order of the Architecture page; a module may import its own layer,
# earlier layers and the helpers.
LAYERS = [
    ["_kernels"],
    ["_table"],
    ["_dsl"],
    ["backends"],
    ["_mf_model", "_ncf_model"],
    ["_base", "_training"],
    ["_mf", "_ncf"],
    ["_registry", "_io", "serving", "cli"],
]
# ``est.save`` (in _base) writes through the model-file layer, on call.
ALLOWED = {("_base.py", "_io")}
HELPERS = {"_threads", "_validation", "_recommend", "exceptions", "metrics", "model_selection",
           "datasets", "preprocessing", "interop"}


def _layer(name):
    for rank, names in enumerate(LAYERS):
        if name in names:
            return rank
    return None


def _package_imports(path):
    """Top-level package parts ``path`` imports (``from .x``, ``from ..x``, ``sparse_rec.x``)."""
    rel = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-node.level]) if node.level <= len(rel) - 1 else []
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # from . import x
                    parts = [a.name for a in node.names]
                    out.update(parts)
                    continue
                out.add(parts[0])
            elif node.module and node.module.startswith("sparse_rec."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names
                       if a.name.startswith("sparse_rec."))
    return out


def test_modules_import_only_earlier_layers_and_helpers():
    bad = []
    for path in PKG.rglob("*.py"):
        own = path.relative_to(PKG).parts[0].removesuffix(".py")
        rank = _layer(own)
        if rank is None:
            continue
        for dep in _package_imports(path) - {own} - HELPERS:
            dep_rank = _layer(dep)
            allowed = (str(path.relative_to(PKG)), dep) in ALLOWED
            if dep_rank is not None and dep_rank > rank and not allowed:
                bad.append(f"{path.relative_to(PKG)} imports {dep}")
    assert not bad, bad
