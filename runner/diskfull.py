"""Say plainly when a stage failed because the disk was full.

A stage that runs out of space (ENOSPC), over a file-size limit (EFBIG, what
``ulimit -f`` gives) or over a quota (EDQUOT) dies with a traceback whose last
line a user has to find among DVC's. :func:`explain` finds it in the tail of
`dvc repro`'s output and adds it, with the stage's outputs, to the run's error.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.plan import Plan

_CODES = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# Python prints "[Errno 28] No space left on device: 'path'"; C tools print
# the strerror text alone.
_FULL = re.compile(
    "|".join(
        [*(rf"\[Errno {code}\]" for code in _CODES)]
        + [re.escape(os.strerror(code)) for code in _CODES]
    )
)

_NAMES_A_FILE = re.compile(r"'[^']*/[^']*'")


def explain(lines: Iterable[str], plan: Plan, stage: str) -> str:
    """The sentence to add to a failed run's error, or '' if no disk was full."""
    found = [line.strip() for line in lines if _FULL.search(line)]
    if not found:
        return ""
    # The line that names the file, if any: DVC's "failed to transfer ... 'a' -> 'b'"
    named = [line for line in found if _NAMES_A_FILE.search(line)]
    found = named or found
    outs = next(
        (s.outs + s.metrics + s.plots for s in plan.stages if s.name == stage), ()
    )
    where = f" (its outputs: {', '.join(outs)})" if outs else ""
    return (
        f": the disk is full or a file-size limit was hit while it wrote{where}: "
        f"{found[-1]}. The inputs and the DVC cache are untouched and dvc.lock "
        "still records the last good run; free space and run again, and the "
        "stage's previous outputs come back from the cache if nothing changed"
    )
