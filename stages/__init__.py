"""Built-in ML lifecycle stages, each run by DVC as ``python -m stages.<kind>``."""

import os as _os
from collections.abc import Callable as _Callable
from typing import NoReturn as _NoReturn

# The warm stage server's socket (stages/warm.py), set by `mlops run` for DVC.
SERVER_ENV = "MLOPS_STAGE_SERVER"

if _os.environ.get(SERVER_ENV):
    from stages import warm as _warm

    _warm.hand_over()  # returns only if no server takes this stage


def _exit_code(value: object) -> int:
    """What Python exits with for ``SystemExit(value)``."""
    import sys

    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # noqa: T201
    return 1


def _started_by_python() -> bool:
    """Whether the module calling run_then_leave is what the interpreter was
    started with (``python -m stages.x`` or ``python stages/x.py``): nothing
    but runpy below it, so no code of anyone else's waits for it to return."""
    import runpy
    import sys

    ours = {"<frozen runpy>", runpy.__file__}
    frame = sys._getframe(2).f_back  # below the module's code that called us
    while frame is not None:
        if frame.f_code.co_filename not in ours:
            return False
        frame = frame.f_back
    return True


def run_then_leave(main: _Callable[[], object], *, always: bool = False) -> _NoReturn:
    """Run ``main`` as ``raise SystemExit(main())`` would, then end at once.

    The exit code, a traceback, the wait for non-daemon threads and the atexit
    handlers (MLflow's flushes, temp folders) are what Python gives; Ctrl-C
    exits 130, as a shell reports an interrupted command, without a
    traceback. What is skipped is tearing the interpreter down object by
    object, which nothing outside the process sees and which takes 0.25 s
    once MLflow is imported and 0.65 s with deepchecks too (bench/README.md,
    "Leaving without tearing down"). The warm server's stage processes end
    this way too (``always``: they must never return into the server). When
    other code ran the module (a profiler, coverage, a debugger), it raises
    ``SystemExit`` instead, so that they can report.
    """
    import atexit
    import sys
    import threading
    import traceback

    try:
        code = _exit_code(main())
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    if not always and not _started_by_python():
        # A profiler, coverage or a debugger ran this module (`python -m
        # cProfile -m stages.train ...`) and reports once it returns.
        raise SystemExit(code)
    try:
        # What the interpreter does on its way out, in its order: wait for the
        # threads that are not daemons (and let thread pools finish their
        # queued work), then the atexit handlers.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # the reader is gone, or it was closed
                pass
        _os._exit(code & 0xFF)
