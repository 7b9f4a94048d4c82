"""A warm stage server: each built-in stage starts without paying for imports.

A built-in stage is a process DVC starts (``python -m stages.<kind> <name>``),
and most of its time on a small data set goes to importing pandas,
scikit-learn, MLflow and deepchecks, again in every stage. While `mlops run`
reproduces the pipeline it starts one server (``python -m stages.warm``) that
imports them once, in the background. A stage process that DVC starts finds
the server through ``MLOPS_STAGE_SERVER`` as it imports this package
(``stages/__init__.py``), before anything heavy, and hands its work over: its
command line, working directory, environment and standard streams (the file
descriptors themselves, over a Unix socket). The server forks; the child runs
the stage module as ``python -m`` would, writing straight to DVC's pipes; the
stage process waits, forwards the signals it gets, and exits with the child's
status. DVC sees one process that ran the stage, as before.

Nothing depends on the server being there. Without the variable, with no
server answering, or when the server refuses (another ``stages`` package,
another working directory, or an environment that changes how an interpreter
starts, such as ``PYTHONHASHSEED``), the stage runs in its own process as it
always did. ``MLOPS_WARM_STAGES=0`` turns the server off.

If the stage process is killed, the server kills the child at once: nothing of
a stage outlives the process DVC started for it.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
import warnings
from typing import TYPE_CHECKING

import stages
from stages import SERVER_ENV as ENV  # the socket's path

if TYPE_CHECKING:
    from collections.abc import Iterable

SWITCH = "MLOPS_WARM_STAGES"  # "0" turns the server off
SERVED = "served"  # what the server prints, one line per stage it forked
# Imported by the server before any stage asks, in the order the stages of a
# pipeline first need them, one at a time. The stages' own modules are not
# among them: each child imports the files as they are.
_BASE = ("numpy", "pandas", "pyarrow.parquet", "yaml")
_SKLEARN = (
    "sklearn.base",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.impute",
    "sklearn.preprocessing",
    "sklearn.model_selection",
    "sklearn.metrics",
    "sklearn.ensemble",
    "sklearn.linear_model",
)
# runner.jsonschema_import goes before deepchecks: see that module.
_DEEPCHECKS = (
    "runner.jsonschema_import",
    "deepchecks.tabular",
    "deepchecks.tabular.suites",
)
_MLFLOW = ("mlflow", "mlflow.sklearn", "mlflow.models", "skops.io")
_PLOTS = ("matplotlib.pyplot",)
# validate, the second stage, needs deepchecks; MLflow is first needed by
# train, the fourth.
PRELOAD = (*_BASE, *_SKLEARN, *_DEEPCHECKS, *_MLFLOW, *_PLOTS)
# MLflow's SQLite store (SQLAlchemy, and alembic for its schema check): 0.6 s
# for each stage that opens it (train, tune, evaluate, register), imported
# only when the stages' store is a SQLite file, right after skops, which train
# needs before it logs.
SQL_STORE = (
    "sqlalchemy.dialects.sqlite",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "alembic.config",
)
SQLITE = "sqlite:"
# What each built-in stage imports of the preloads. A stage that asks before
# its own are loaded waits while the server imports them, those first, rather
# than be forked early and import them again beside the server: the same wait,
# half the work. Others are forked at once with what is loaded so far. A name
# here that the stage does not import only costs it time, never a result.
_MLFLOW_STORE = (*_MLFLOW, *SQL_STORE)
NEEDS = {
    "stages.ingest": _BASE,
    "stages.validate": (*_BASE, *_DEEPCHECKS),
    "stages.preprocess": (*_BASE, *_SKLEARN),
    "stages.tune": (*_BASE, *_SKLEARN, *_MLFLOW_STORE),
    "stages.train": (*_BASE, *_SKLEARN, *_MLFLOW_STORE),
    "stages.evaluate": (*PRELOAD, *SQL_STORE),
    "stages.register": (*_BASE, *_MLFLOW_STORE),
}


def preload(tracking_uri: str, kinds: Iterable[str] | None = None) -> list[str]:
    """What the server imports, in order, for stages tracking to ``tracking_uri``.

    ``kinds``: the built-in stages that may still run (their ``uses:``), when
    the run is known to skip the others; only their :data:`NEEDS` are imported
    (a run that only registers again never loads deepchecks). ``None``: all.
    """
    order = list(PRELOAD)
    if tracking_uri.startswith(SQLITE):
        at = PRELOAD.index("skops.io") + 1
        order[at:at] = SQL_STORE
    if kinds is None:
        return order
    needed = {m for kind in kinds for m in NEEDS.get(f"stages.{kind}", PRELOAD)}
    return [m for m in order if m in needed]


# How an interpreter starts, fixed when the server started: a stage whose
# environment differs in one of these runs in its own process.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC", "OMP_", "OPENBLAS_", "MKL_")
_HEADER = 8  # bytes of the length that goes before a request's JSON
_STREAMS = 3  # stdin, stdout, stderr


def enabled(env: dict[str, str] | os._Environ[str]) -> bool:
    """Whether `mlops run` starts the server (``MLOPS_WARM_STAGES`` is not "0")."""
    return env.get(SWITCH, "1") != "0" and sys.platform == "linux"


def _startup_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES)}


def _stage_module(argv: list[str]) -> str | None:
    """``stages.<kind>`` when ``argv`` is ``python [flags] -m stages.<kind> ...``."""
    try:
        at = argv.index("-m", 1)
    except ValueError:
        return None
    name = argv[at + 1] if at + 1 < len(argv) else ""
    kind = name.removeprefix("stages.")
    if name == kind or not kind.replace("_", "").isalnum() or kind == "warm":
        return None
    return name


# -- the stage process's side ---------------------------------------------------


def hand_over() -> None:
    """Have the server run this process's stage, and exit with its status.

    Returns (and the stage runs here) when this process is not a stage that
    DVC started under `mlops run`, or no server takes it.
    """
    path = os.environ.get(ENV)
    module = _stage_module(list(getattr(sys, "orig_argv", [])))
    if not path or module is None:
        return
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return
    request = json.dumps(
        {
            "module": module,
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "package": os.path.dirname(os.path.abspath(__file__)),
        }
    ).encode()
    try:
        socket.send_fds(conn, [len(request).to_bytes(_HEADER, "big")], [0, 1, 2])
        conn.sendall(request)
        replies = conn.makefile("r", encoding="utf-8")
        first = json.loads(replies.readline() or "{}")
    except (OSError, ValueError):
        conn.close()
        return
    if "pid" not in first:  # refused: run here
        conn.close()
        return
    child = int(first["pid"])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        last = json.loads(replies.readline() or "{}")
    except (OSError, ValueError):
        last = {}
    if "signal" in last:
        died_of = int(last["signal"])
        signal.signal(died_of, signal.SIG_DFL)
        os.kill(os.getpid(), died_of)
    if "code" not in last:
        os.write(2, f"{module}: the stage server went away mid-stage\n".encode())
        os._exit(1)
    os._exit(int(last["code"]))


# -- the server's side ----------------------------------------------------------


def _read_request(conn: socket.socket) -> tuple[dict, list[int]] | None:
    conn.settimeout(10)
    try:
        head, fds, _, _ = socket.recv_fds(conn, _HEADER, _STREAMS)
        if len(head) != _HEADER or len(fds) != _STREAMS:
            for fd in fds:
                os.close(fd)
            return None
        size = int.from_bytes(head, "big")
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        request = json.loads(data)
    except (OSError, ValueError):
        return None
    conn.settimeout(None)
    return request, fds


def _refusal(request: dict) -> str | None:
    """Why this server cannot run the request as its own process would, if so."""
    if request.get("package") != os.path.dirname(os.path.abspath(__file__)):
        return "another stages package"
    if request.get("cwd") != os.getcwd():
        return "another working directory"
    if _startup_env(request.get("env", {})) != _startup_env(os.environ):
        return "another interpreter set-up"
    if _stage_module(["python", "-m", str(request.get("module"))]) is None:
        return "not a stage"
    return None


# The server's own start, before it imports anything heavy.
_FRESH_PATH = list(sys.path)
_FRESH_WARNINGS = list(warnings.filters)


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the stage process, run it, exit."""
    import runpy

    from stages import run_then_leave

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    # What the imports changed that a fresh interpreter would not have: the
    # import path (pkg_resources, imported by deepchecks, puts setuptools'
    # vendored packages on it, and MLflow would then record their versions in
    # the model) and the warnings filters.
    sys.path[:] = _FRESH_PATH
    warnings.filters[:] = _FRESH_WARNINGS  # type: ignore[index]
    os.environ.clear()
    os.environ.update(request["env"])
    module = request["module"]
    sys.argv = [module, *request["argv"]]
    sys.modules.pop(module, None)  # run as `python -m` runs it: fresh, as __main__

    def stage() -> None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)

    run_then_leave(stage, always=True)


class _Server:
    """Accepts stages until SIGTERM, or until the process that started it is
    gone and no stage is running; imports ``preload`` between requests."""

    def __init__(
        self, listener: socket.socket, parent: int, preload: list[str]
    ) -> None:
        self.listener = listener
        self.pending = list(preload)
        self.parent = parent
        self.running: dict[int, socket.socket] = {}  # child pid -> its asker
        # asker -> its request and streams, until the preloads it needs are in
        self.waiting: dict[socket.socket, tuple[dict, list[int]]] = {}
        self.stopped = False
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stages'
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")

    def _on_term(self, _signum: int, _frame: object) -> None:
        self.stopped = True

    def loop(self) -> None:
        while not self.stopped:
            if not self.running and not self.waiting and os.getppid() != self.parent:
                break  # `mlops run` is gone and nothing runs
            for key, _ in self.selector.select(0 if self.pending else 1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._drain_wakeups()
                elif key.data == "waiting":  # it went away before its fork
                    self._drop(key.fileobj)  # type: ignore[arg-type]
                else:  # the stage process went away: so does its stage
                    _kill(int(key.data))
            self._reap()
            if self.pending and not self.stopped:
                self._preload_one()
                self._release()
        for conn in list(self.waiting):
            self._drop(conn)  # it runs in its own process
        for pid in list(self.running):
            _kill(pid)

    def _preload_one(self) -> None:
        import importlib

        try:
            importlib.import_module(self.pending.pop(0))
        except Exception:  # noqa: S110 - the child imports it, or fails as it would
            pass
        # Never scanned again by this server's collector while it imports the
        # rest (and _fork freezes what came since, for the children).
        gc.freeze()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.running.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                _send(conn, {"signal": os.WTERMSIG(status)})
            else:
                _send(conn, {"code": os.waitstatus_to_exitcode(status)})
            self.selector.unregister(conn)
            conn.close()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        got = _read_request(conn)
        if got is None:
            conn.close()
            return
        request, fds = got
        why = _refusal(request)
        if why is not None:
            for fd in fds:
                os.close(fd)
            _send(conn, {"refused": why})
            conn.close()
            return
        needs = [m for m in NEEDS.get(request["module"], ()) if m in self.pending]
        if needs:  # imported next, in their order, then it is forked
            self.pending = needs + [m for m in self.pending if m not in needs]
            self.waiting[conn] = (request, fds)
            self.selector.register(conn, selectors.EVENT_READ, "waiting")
            return
        self._fork(conn, request, fds)

    def _release(self) -> None:
        """Fork each waiting stage whose preloads are all in."""
        for conn, (request, fds) in list(self.waiting.items()):
            if not any(m in self.pending for m in NEEDS[request["module"]]):
                self.selector.unregister(conn)
                del self.waiting[conn]
                self._fork(conn, request, fds)

    def _drop(self, conn: socket.socket) -> None:
        _request, fds = self.waiting.pop(conn)
        self.selector.unregister(conn)
        for fd in fds:
            os.close(fd)
        conn.close()

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        # What is imported so far is never scanned by the child's collector,
        # nor copied by it (Python's recipe for forking servers, gc.freeze).
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            conn.close()
            for other in [*self.running.values(), *self.waiting]:
                other.close()
            for _, streams in self.waiting.values():
                for fd in streams:
                    os.close(fd)
            os.close(self.wake_r)
            os.close(self.wake_w)
            _run_child(request, fds)
        for fd in fds:
            os.close(fd)
        self.running[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        _send(conn, {"pid": pid})
        print(f"{SERVED} {request['module']}", flush=True)  # noqa: T201 - to `mlops run`


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.warm <fd> <pid> [module ...]``: serve on the listening
    socket inherited as file descriptor ``fd`` (see runner.engine) for as long
    as process ``pid`` (its parent, `mlops run`) lives or a stage runs,
    importing the modules named (by default :data:`PRELOAD`; the engine names
    :func:`preload`'s) while it waits."""
    args = sys.argv[1:] if argv is None else argv
    listener = socket.socket(fileno=int(args[0]))
    # Its children start from the filters of a fresh interpreter (_FRESH_WARNINGS).
    stages.quiet_pkg_resources()
    _Server(listener, int(args[1]), args[2:] or list(PRELOAD)).loop()
    return 0


if __name__ == "__main__":
    from stages import run_then_leave

    run_then_leave(main)
