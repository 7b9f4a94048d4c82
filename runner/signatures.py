"""An estimator's keyword parameters, read from its source without importing it.

`mlops validate` must stay fast and import no ML library, yet a misspelt
parameter (`max_dept`) is the mistake users make most in `with.params` and
`with.space`. scikit-learn requires every estimator to name its parameters in
its own `__init__` (they are what `get_params` returns), so they can be read
from the class's source with `ast`: the module is located through its import
path, as Python would find it, and re-exports (`from ._forest import ...`)
are followed. Whenever the source does not say for sure (a compiled module, a
lazy `__getattr__`, an inherited `__init__`, `**kwargs`) the answer is None,
and the stage's own check with `inspect.signature` at run time stays the last
word.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# Re-exports followed before giving up (scikit-learn needs one or two).
MAX_HOPS = 8


def parameters(dotted: str) -> frozenset[str] | None:
    """Keyword parameters of the class `dotted` names, or None if unknown."""
    module, _, name = dotted.rpartition(".")
    if not module:
        return None
    return _lookup(module, name, MAX_HOPS)


def _lookup(module: str, name: str, hops: int) -> frozenset[str] | None:
    found = _module_source(module) if hops > 0 else None
    tree = _parse(found[0]) if found else None
    if found is None or tree is None:
        return None
    is_package = found[1]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return _init_parameters(node)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, is_package, node)
                    return _lookup(source, alias.name, hops - 1) if source else None
    return None


def _init_parameters(cls: ast.ClassDef) -> frozenset[str] | None:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            if args.kwarg is not None:
                return None
            named = [a.arg for a in args.args[1:]] + [a.arg for a in args.kwonlyargs]
            return frozenset(named)
    return None  # inherited: which base's __init__ applies is not read here


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return None
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _module_source(module: str) -> tuple[Path, bool] | None:
    """The .py file of `module` and whether it is a package, importing nothing.

    `importlib.util.find_spec` of a submodule would import its parents, so only
    the top-level package is looked up and the rest is walked as folders.
    """
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    if not rest:
        origin = spec.origin or ""
        is_package = spec.submodule_search_locations is not None
        return (Path(origin), is_package) if origin.endswith(".py") else None
    for location in spec.submodule_search_locations or ():
        here = Path(location).joinpath(*rest[:-1])
        package = here / rest[-1] / "__init__.py"
        if package.is_file():
            return package, True
        plain = here / f"{rest[-1]}.py"
        if plain.is_file():
            return plain, False
    return None


@functools.lru_cache(maxsize=64)
def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
