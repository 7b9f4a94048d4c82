"""Built-in ML lifecycle stages, each run by DVC as ``python -m stages.<kind>``."""

import gc as _gc
import os as _os
import sys as _sys
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from typing import NoReturn as _NoReturn

# Where estimators may come from unless a stage's `with.allow` adds prefixes:
# what `mlops validate` checks (runner/checks.py) and what train and tune
# import from (stages/common.py), defined here once for both.
DEFAULT_ALLOWED_PREFIXES = ("sklearn.",)
# The metrics each task computes, named once for `mlops validate`
# (runner/checks.py) and the stages (stages/common.py); the schema's
# `metrics` enum is their union (tests/test_schema.py checks it agrees).
CLASSIFICATION_METRICS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    }
)
REGRESSION_METRICS = frozenset({"r2", "mae", "mse", "rmse"})
# The files `mlops compile` writes for DVC and the stages read, named once for
# the compiler (runner/plan.py, runner/targets/dvc.py) and the stages.
DVC_FILE = "dvc.yaml"
DVC_LOCK = "dvc.lock"  # DVC's record of the last run of DVC_FILE
PARAMS_FILE = "params.yaml"


def allowed_prefixes(allow: "_Iterable[str] | None") -> tuple[str, ...]:
    """The estimator allow-list: the defaults, then a stage's ``with.allow``."""
    return (*DEFAULT_ALLOWED_PREFIXES, *(allow or ()))


def in_modules(dotted: str, prefixes: "_Iterable[str]") -> bool:
    """Whether ``dotted`` is one of ``prefixes`` or inside one: ``xgboost`` and
    ``xgboost.`` both take ``xgboost.XGBClassifier``, neither ``xgboostx.X``.
    The one rule for estimators (validate, train, tune) and a model's types."""
    for prefix in prefixes:
        inside = prefix if prefix.endswith(".") else prefix + "."
        if dotted == prefix or dotted.startswith(inside):
            return True
    return False


# The warm stage server's socket (stages/warm.py), set by `mlops run` for DVC.
SERVER_ENV = "MLOPS_STAGE_SERVER"
# A file `mlops run` names for DVC's stages: a built-in stage that fails on a
# StageError writes its one-line message there, for the run's own error and
# its report (runner/engine.py).
ERROR_FILE_ENV = "MLOPS_STAGE_ERROR_FILE"
# A stage process spends most of its time importing, and an import allocates
# objects that live as long as the process: each pass of the cyclic collector
# over them (one every 700 allocations, by default) finds nothing. Importing
# MLflow, skops and deepchecks takes an eighth less CPU collecting every
# 100,000 (bench/README.md, "Garbage collection while importing").
BATCH_GC_THRESHOLD = 100_000
_DEFAULT_GC = _gc.get_threshold()


def batch_gc() -> None:
    """Collect cycles every :data:`BATCH_GC_THRESHOLD` allocations: for a
    process that imports, works and ends (the other two thresholds kept)."""
    _gc.set_threshold(BATCH_GC_THRESHOLD, *_DEFAULT_GC[1:])


def serving_gc() -> None:
    """For a process that serves from here on: what it has loaded is frozen
    (never scanned again, and shared with the processes it forks, as Python's
    gc.freeze documents) and collection goes back to Python's default."""
    _gc.freeze()
    _gc.set_threshold(*_DEFAULT_GC)


def quiet_pkg_resources() -> None:
    """Before deepchecks is imported: it imports pkg_resources, which warns on
    import that it is deprecated. The warning is for deepchecks (whose last
    release it is), not for whoever reads a stage's log; pyproject.toml pins a
    setuptools that still has pkg_resources."""
    import warnings

    warnings.filterwarnings(
        "ignore", message="pkg_resources is deprecated", category=UserWarning
    )


# `python -m stages.<kind>`: while the package is found, argv[0] is "-m".
if _sys.argv[:1] == ["-m"]:
    batch_gc()

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
