"""How DVC is started: its environment, and early, before `mlops run` reads its spec.

Most of a `dvc repro` with nothing to do is DVC importing itself (about 0.4 s
of 0.7 s here). `mlops run` starts this file first, as a script
(``python -P runner/dvcstart.py FD``, so it imports only the standard library,
DVC and, to end, ``stages``), and goes on loading, validating and compiling
the spec while DVC imports on the other core. This process then waits for one
message on the pipe ``FD``:

- a JSON object ``{"args": [...], "env": {...}, "setup": [...]}``: it takes
  ``env`` as its whole environment, runs each ``[args, what]`` of ``setup``
  (``dvc init``, ``dvc remote add`` on a repository's first run: 0.6 s as
  processes of their own, a few milliseconds here) with their output held
  back, then ``dvc <args>`` exactly as ``python -m dvc`` does, in its working
  directory, on the streams it was given; ``"args": null`` (`mlops init`,
  which only sets up) ends with 0 after the set-up. A set-up command that fails ends
  the process with :data:`SETUP_FAILED` and one stderr line,
  :data:`SETUP_PREFIX` then ``<what> failed: <the last line it printed>``;
- end of file (the run stopped before DVC was needed: a bad spec, a held lock,
  a failed set-up): it exits 0 without reading or writing anything.

Nothing of the repository is read before the message: the imports touch no
file of it, so compiling dvc.yaml in the meantime is safe.

Once DVC's command has returned, the process ends as every stage process does
(``stages.run_then_leave``: threads, atexit handlers, flushed streams, then
``os._exit``): it skips tearing down an interpreter that holds DVC, networkx
and dulwich, object by object (0.1 s here, a seventh of a no-op `dvc
repro`), which nothing outside it can see. DVC closes its repository, locks
and state databases itself, inside the command.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Libraries that phone home unless told not to; a pipeline run never should.
QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def environment() -> dict[str, str]:
    """The environment for DVC and the stages: this interpreter's bin first."""
    env = dict(os.environ)
    env.update(QUIET_ENV)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


class EarlyDvc:
    """A DVC process importing itself while `mlops run` reads its spec.

    :meth:`start` spawns runner/dvcstart.py in ``root`` with its output piped
    (as `mlops run` and `mlops plan` read it); :meth:`go` hands it the command and the
    environment (the warm server's socket is only known by then). One that
    was never told to go is killed on the way out: it has touched nothing.
    """

    SCRIPT = Path(__file__)

    def __init__(self, proc: subprocess.Popen[str], fd: int) -> None:
        self.proc = proc
        self.fd: int | None = fd  # the write end of its message pipe
        self.setup: list[tuple[list[str], str]] = []  # run before the command

    def before(self, args: list[str], what: str) -> None:
        """Run ``dvc <args>`` first, when told to go; ``what`` names it in errors."""
        if self.fd is None:
            raise RuntimeError("EarlyDvc.before called after go")
        self.setup.append((list(args), what))

    @classmethod
    @contextmanager
    def start(cls, root: Path, *, merged: bool = True) -> Iterator[EarlyDvc | None]:
        """The started process, or None where there is nothing to start it in.

        ``merged``: its stderr goes to the same pipe as its stdout (what
        `dvc repro`'s progress needs); otherwise to a pipe of its own.
        """
        # Not where file descriptors cannot be passed (Windows), nor where the
        # spec's folder is missing (the spec's own error names it).
        if os.name != "posix" or not root.is_dir():
            yield None
            return
        read, write = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-P", str(cls.SCRIPT), str(read)], cwd=root,
                env=environment(), pass_fds=(read,), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                text=True, bufsize=1,
            )  # fmt: skip
        except OSError:
            os.close(write)
            yield None
            return
        finally:
            os.close(read)
        early = cls(proc, write)
        try:
            yield early
        finally:
            early.discard()

    def go(self, args: list[str] | None, env: dict[str, str]) -> subprocess.Popen[str]:
        """Run ``dvc <args>`` with ``env`` (``None``: only the set-up); returns
        the process to read and wait."""
        if self.fd is None:
            raise RuntimeError("EarlyDvc.go called twice")
        message = json.dumps({"args": args, "env": env, "setup": self.setup}).encode()
        fd, self.fd = self.fd, None
        try:
            with os.fdopen(fd, "wb") as pipe:
                pipe.write(message)
        except BrokenPipeError:
            pass  # it died importing: its output says why, its exit code fails
        return self.proc

    def discard(self) -> None:
        """Stop it if it was never told to go (a no-op otherwise)."""
        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None
        self.proc.kill()
        self.proc.communicate()


# How a failed set-up command is told apart from the command's own failure:
# an exit code no DVC command returns (DVC's own are 0, 1, 141 and 251-255),
# and a line whose prefix `mlops run` and `mlops plan` look for.
SETUP_FAILED = 250
SETUP_PREFIX = "mlops: DVC set-up: "

# What `dvc repro` imports on its way to "didn't change, skipping", in the
# order it imports them (python -X importtime, DVC 3.67); whatever else a
# command needs it imports after the message, as it would anyway.
PRELOAD = (
    "dvc.cli",
    "dvc.cli.parser",
    "dvc.config",
    "dvc.repo",
    "dvc.cachemgr",
    "dvc.data_cloud",
    "dvc.lock",
    "dvc.repo.reproduce",
    "dvc.repo.stage",
    "dvc.scm",
    "dvc.dirs",
    "configobj",
    "dvc_data.hashfile.db.local",
    "dulwich.worktree",
    "dulwich.ignore",
    "dvc.utils.strictyaml",
    "ruamel.yaml",
    "dvc.repo.index",
    "dvc.repo.graph",
    "dvc.repo.trie",
    "networkx",
    "dvc.rwlock",
)


def main(argv: list[str]) -> int:
    return _wait_then_run(int(argv[0]))


def _wait_then_run(fd: int) -> int:
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        with os.fdopen(fd, "rb") as pipe:
            raw = pipe.read()
    except KeyboardInterrupt:  # Ctrl-C while waiting: `mlops run` says why
        return 130
    if not raw:
        return 0
    message = json.loads(raw)
    os.environ.clear()
    os.environ.update(message["env"])
    from dvc.cli import main as dvc

    for args, what in message.get("setup", []):
        code, printed = _quietly(dvc, args)
        if code != 0:
            lines = printed.strip().splitlines()
            last = lines[-1] if lines else f"exit code {code}"
            sys.stderr.write(f"{SETUP_PREFIX}{what} failed: {last}\n")
            sys.stderr.flush()
            return SETUP_FAILED
    if message["args"] is None:
        return 0
    return int(dvc(message["args"]))


def _quietly(dvc: Callable[[list[str]], int], args: list[str]) -> tuple[int, str]:
    """``dvc <args>`` with its stdout and stderr held back (DVC's loggers keep
    their own references to the streams, so it is done on the descriptors)."""
    with tempfile.TemporaryFile() as held:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(held.fileno(), 1)
            os.dup2(held.fileno(), 2)
            code = int(dvc(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        held.seek(0)
        return code, held.read().decode("utf-8", "replace")


if __name__ == "__main__":
    # stages ships in the same distribution as runner (pyproject.toml).
    from stages import batch_gc, run_then_leave

    batch_gc()  # DVC's imports are most of this process's work too
    run_then_leave(lambda: main(sys.argv[1:]))
