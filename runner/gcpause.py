"""Pause Python's cyclic garbage collector while a spec is read or compiled.

Reading and compiling a large spec allocates millions of objects (YAML nodes,
marks, dicts) that live until the command ends and hold no cycles; each full
collection walks them all again. At 5,000 stages that was about a fifth of a
compile (1.0 of 5.7 s of CPU, issue 13). Reference counting still frees
everything as usual; a cycle made meanwhile is collected once this ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside; the collector's state restored after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
