"""One pipeline run at a time in a repository.

`mlops run` writes dvc.yaml, params.yaml and the workflows before DVC takes
its own lock, so two runs at once could each compile a different spec under
the other's `dvc repro`. :func:`held` takes an exclusive ``flock`` on
``.mlops/run.lock`` around compile and repro. The kernel drops that lock when
the holding process dies, ``kill -9`` included, so nothing is ever left to
clean up by hand. A second run does not wait: it fails at once with
:data:`EXIT_BUSY`, naming the holder (pid, command, since when).

The lock is not passed on to DVC. When `mlops run` is killed alone, its
`dvc repro` may outlive it for a while (until the stage ends or next writes to
the closed pipe). :func:`held` therefore also looks, before anything is
compiled, for a live DVC process in DVC's own locks: ``.dvc/tmp/lock`` (an
``flock``, held by DVC except while a stage's command runs) and
``.dvc/tmp/rwlock`` (the pid of each DVC process using a stage's outputs),
and names it. An rwlock entry whose process is gone, a zombie not yet reaped
after ``kill -9``, or a pid reused by something that is not DVC is stale:
DVC would refuse to run ("is busy, it is being blocked by") until someone
removed the file by hand, so once no live DVC process is listed, and with
our own lock held, the file is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from runner.errors import RunError

LOCK_FILE = ".mlops/run.lock"
# DVC's repository lock (dvc/lock.py, a zc.lockfile: flock, " <pid>" inside).
DVC_LOCK_FILE = ".dvc/tmp/lock"
# DVC's stage locks (dvc/rwlock.py): {"read"|"write": {path: info or [info]}},
# info = {"pid": int, "cmd": str}, edited under the flock of RWLOCK_GUARD.
RWLOCK_FILE = ".dvc/tmp/rwlock"
RWLOCK_GUARD = ".dvc/tmp/rwlock.lock"
# sysexits.h EX_TEMPFAIL: another run holds the repository; try again later.
EXIT_BUSY = 75


class Busy(RunError):
    """Another run holds this repository."""

    exit_code = EXIT_BUSY


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        pid, command, since = info["pid"], info["command"], info["since"]
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its details"
    return f"pid {pid} (`{command}`), running since {since}"


def _command_of(pid: int) -> str:
    """A process's command line, where /proc tells it; else ''."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(
        part.decode("utf-8", "replace") for part in raw.split(b"\0") if part
    )


def _check_dvc_free(root: Path) -> None:
    """Fail if a DVC process holds the repository's DVC lock right now."""
    path = root / DVC_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if _try_flock(fd):
            return  # free; closing the file below lets it go at once
        text = os.pread(fd, 64, 0).decode("utf-8", "replace").split()
        pid = int(text[0]) if text and text[0].isdigit() else None
        who = f"pid {pid}" if pid else "a process"
        command = _command_of(pid) if pid else ""
        if command:
            who += f" (`{command}`)"
        raise Busy(
            f"a DVC process holds this repository ({DVC_LOCK_FILE}): {who}; it may "
            "be the `dvc repro` of an `mlops run` that was killed, and it stops "
            "when its stage ends. Run again once it has exited"
        )
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # no /proc here: it exists, so count it
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _rwlock_holders(text: str) -> list[tuple[int, str]] | None:
    """(pid, cmd) of every entry, or None if the file is not DVC's JSON."""
    try:
        data = json.loads(text or "{}")
        infos = [
            info
            for mode in ("read", "write")
            for value in data.get(mode, {}).values()
            for info in (value if isinstance(value, list) else [value])
        ]
        return [(int(i["pid"]), str(i["cmd"])) for i in infos]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _check_rwlock(root: Path) -> None:
    """Fail naming a live DVC process in DVC's rwlock; else remove a stale one."""
    path = root / RWLOCK_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    holders = _rwlock_holders(text)
    for pid, cmd in holders or []:
        if _alive(pid) and "dvc" in (_command_of(pid) or "dvc"):
            raise Busy(
                f"a DVC process uses this repository's stages ({RWLOCK_FILE}): "
                f"pid {pid} (`{cmd}`); it may be the `dvc repro` of an `mlops run` "
                "that was killed, and it stops when its stage ends. Run again "
                "once it has exited"
            )
    fd = os.open(root / RWLOCK_GUARD, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _try_flock(fd):  # no DVC is editing it: every entry is stale
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(root: Path, command: str | None = None) -> Iterator[None]:
    """Hold the repository's run lock for the block, or raise :class:`Busy`."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_flock(fd):
            raise Busy(
                f"another run holds this repository ({LOCK_FILE}): "
                f"{_holder(fd)}. Wait for it to finish, or stop it, then run again"
            )
        _check_dvc_free(root)
        _check_rwlock(root)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = {
            "pid": os.getpid(),
            "command": command or " ".join(["mlops", *sys.argv[1:]]),
            "since": since,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
