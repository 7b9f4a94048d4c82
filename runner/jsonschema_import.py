"""Import jsonschema without the libraries it loads only to check ``format``.

jsonschema imports, when they are installed, the libraries behind its
``format`` checkers. Nothing the framework validates uses them: neither the
spec's schema nor deepchecks, which reaches jsonschema through nbformat. They
are installed all the same (deepchecks needs jupyter-server, whose
jupyter-events asks for ``jsonschema[format-nongpl]``), and
``rfc3987_syntax`` compiles a grammar as it is imported: 1.5 to 2 s, in
`mlops validate` and in every process that imports deepchecks (issue 13;
bench/README.md). They are hidden while jsonschema imports, so it leaves those
checkers out, then made importable again: requests, for one, needs idna.

Importing this module does it (the warm stage server preloads it by name);
:func:`load` does it from code. Either is a no-op once jsonschema is imported.
"""

from __future__ import annotations

import sys
from types import ModuleType

FORMAT_LIBRARIES = (
    "rfc3987_syntax", "rfc3987", "rfc3986_validator", "rfc3339_validator",
    "isoduration", "fqdn", "idna", "webcolors", "jsonpointer", "uri_template",
)  # fmt: skip


def load() -> ModuleType:
    """jsonschema, imported without :data:`FORMAT_LIBRARIES` if not yet imported."""
    if "jsonschema" not in sys.modules:
        hidden = [m for m in FORMAT_LIBRARIES if m not in sys.modules]
        # A None entry makes `import name` raise ImportError, which jsonschema
        # takes as "not installed".
        sys.modules.update(dict.fromkeys(hidden))  # type: ignore[arg-type]
        try:
            import jsonschema  # noqa: F401
        finally:
            for name in hidden:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]
    return sys.modules["jsonschema"]


load()
