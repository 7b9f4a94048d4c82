"""Drive DVC, the local engine: set up the repository, show status, reproduce.

DVC runs in a subprocess of this same interpreter (`python -m dvc`), so the
stages it starts find the same virtualenv and the CLI never imports DVC. The
`dvc repro` of `mlops run` is started before the spec is read
(runner/dvcstart.py), so DVC's imports overlap the CLI's.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner import MAIN_BRANCH
from runner.dvcstart import SETUP_FAILED, SETUP_PREFIX, EarlyDvc, environment
from runner.errors import RunError, SpecError
from stages import DVC_LOCK, ERROR_FILE_ENV
from stages.tracking import chosen_uri

# Imported where used: `mlops run` imports this module to start DVC early
# (EarlyDvc), before anything that reads a spec is loaded.
if TYPE_CHECKING:
    from runner.plan import Plan

_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
_RESTORED = re.compile(r"^Stage '([^']+)' is cached - skipping run")
# `dvc repro --pull` on an unchanged stage whose outputs this checkout lacks;
# when the remote lacks them too, DVC says so and runs the stage.
_PULLING = re.compile(r"^Pulling data for stage: '([^']+)'")


def _run(args: list[str], root: Path, what: str) -> str:
    proc = subprocess.run(
        args, cwd=root, env=environment(), capture_output=True, text=True, check=False
    )
    return _checked(what, proc.returncode, proc.stdout, proc.stderr)


def _checked(what: str, code: int, out: str, err: str) -> str:
    """``out``, or a RunError naming ``what`` and the last line it printed."""
    if code != 0:
        detail = (err or out).strip().splitlines()
        raise RunError(f"{what} failed: {detail[-1] if detail else code}")
    return out


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def _remote_value(url: str, root: Path) -> str:
    """How DVC stores a remote URL: a relative local path relative to .dvc/;
    an absolute one, or a URL, as given."""
    if "://" in url or os.path.isabs(url):
        return url
    return os.path.relpath(root / url, root / ".dvc").replace(os.sep, "/")


def _remote_configured(root: Path, name: str, url: str) -> bool:
    config = configparser.ConfigParser()
    try:
        config.read(root / ".dvc" / "config", encoding="utf-8")
    except configparser.Error:
        return False
    section = f"'remote \"{name}\"'"
    return config.get("core", "remote", fallback=None) == name and config.get(
        section, "url", fallback=None
    ) == _remote_value(url, root)


def prepare(root: Path, plan: Plan, early: EarlyDvc | None = None) -> list[str]:
    """Make root a git + DVC repository with the spec's remote; say what was done.

    ``early``: the DVC process the command will run in (:class:`EarlyDvc`);
    `dvc init` and `dvc remote add` then run in it, before the command, instead
    of as processes of their own (each mostly DVC importing itself). A failure
    of either is reported as the command's, by :func:`_setup_failure`.
    """
    done = []
    if not (root / ".git").exists():
        _run(["git", "init", "-q", "-b", MAIN_BRANCH], root, "git init")
        done.append("initialised git")

    def setup(args: list[str], what: str) -> None:
        if early is None:
            _run(dvc(*args), root, what)
        else:
            early.before(args, what)

    if not (root / ".dvc").exists():
        setup(["init", "-q"], "dvc init")
        done.append("initialised DVC")
    storage = plan.spec.storage
    if not _remote_configured(root, storage.remote_name, storage.remote_url):
        if "://" not in storage.remote_url:
            (root / storage.remote_url).mkdir(parents=True, exist_ok=True)
        setup(
            ["remote", "add", "--default", "--force", storage.remote_name,
             storage.remote_url],
            "dvc remote add",
        )  # fmt: skip
        done.append(f"set DVC remote {storage.remote_name!r} to {storage.remote_url}")
    return done


def set_up(early: EarlyDvc) -> None:
    """Run the set-up :func:`prepare` left in ``early`` (started with
    ``merged=False``), and nothing after it: what `mlops init` needs of DVC."""
    if not early.setup:
        return  # a repository set up already: the process is discarded unused
    out, err = early.go(None, environment()).communicate()
    if failed := _setup_failure(early.proc.returncode, err.splitlines()):
        raise failed
    _checked("dvc set-up", early.proc.returncode, out, err)


def _setup_failure(code: int, lines: Iterable[str]) -> RunError | None:
    """The error of a set-up command that failed in an early DVC process."""
    if code != SETUP_FAILED:
        return None
    for line in lines:
        if line.startswith(SETUP_PREFIX):
            return RunError(line.removeprefix(SETUP_PREFIX).rstrip("\n"))
    return RunError(f"DVC set-up failed (exit code {code})")


@dataclass
class Status:
    """Which stages would run, and why."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def will_run(self, plan: Plan) -> list[str]:
        closure = plan.downstream_closure(set(self.reasons))
        return [s.name for s in plan.stages if s.name in closure]


def _reasons(entries: list[object]) -> list[str]:
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(entry)
            continue
        if not isinstance(entry, dict):
            continue
        for kind, changes in entry.items():
            if isinstance(changes, dict):
                items = []
                for path, change in changes.items():
                    if isinstance(change, dict):  # params: {key: change}
                        keys = ", ".join(f"{k} {v}" for k, v in change.items())
                        items.append(f"{path} ({keys})")
                    else:
                        items.append(f"{path} {change}")
                out.append(f"{kind}: {'; '.join(items)}")
            else:
                out.append(f"{kind}: {changes}")
    return out


def status(root: Path, early: EarlyDvc | None = None) -> Status:
    """DVC's view of which stages of the spec's own dvc.yaml are out of date, and why.

    Scoped to that file: without a target DVC collects every dvc.yaml in the
    repository (test fixtures, vendored examples), whose stages share our names.
    ``early``: the DVC process to ask (started with ``merged=False``).
    """
    from runner.targets.dvc import DVC_FILE

    args = ["status", "--json", DVC_FILE]
    if early is None:
        text = _run(dvc(*args), root, "dvc status")
    else:
        out, err = early.go(args, environment()).communicate()
        if failed := _setup_failure(early.proc.returncode, err.splitlines()):
            raise failed
        text = _checked("dvc status", early.proc.returncode, out, err)
    raw = json.loads(text or "{}")
    reasons = {}
    for target, entries in raw.items():
        name = target.rsplit(":", 1)[-1]
        reasons[name] = _reasons(entries)
    return Status(reasons)


LAST_RUN = ".mlops/last-run.json"


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warm: int = 0  # stages the warm stage server ran (stages/warm.py)
    # Set when the run did not finish: the stage it stopped at (None when it
    # stopped before any), and the error it ended with.
    failed: str | None = None
    error: str | None = None


class StageFailed(RunError):
    """`dvc repro` stopped at a stage; ``outcome`` holds what ran before it."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def record(root: Path, outcome: Outcome) -> None:
    """Keep what the last run did (for `mlops report`: ran or cached, or where
    it failed)."""
    from runner.write import write_atomic

    write_atomic(root / LAST_RUN, json.dumps(asdict(outcome), indent=2) + "\n")


def record_failure(root: Path, exc: BaseException) -> None:
    """Keep that the last run did not finish, so that no report or gate
    check reads the outputs an earlier run left as this run's."""
    outcome = exc.outcome if isinstance(exc, StageFailed) else Outcome()
    if isinstance(exc, RunError | SpecError):
        outcome.error = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        outcome.error = "the run was interrupted"
    else:  # a fault of ours: its message is for the traceback, not a report
        outcome.error = f"the run stopped on {type(exc).__name__}"
    try:
        record(root, outcome)
    except OSError:  # a full disk, say: at least no earlier run's record stays
        with contextlib.suppress(OSError):
            (root / LAST_RUN).unlink(missing_ok=True)


class StageServer:
    """The warm stage server of one `dvc repro` (stages/warm.py).

    The listening socket exists before DVC starts, so a stage that asks before
    the server is up waits in its queue; the server itself starts on the first
    stage DVC runs, so a run with nothing to do starts nothing. Once started,
    the server holds the only copy of the socket: if it dies, a stage that asks
    is refused at once and runs in its own process.
    """

    def __init__(self, root: Path, installed: bool, tracking_uri: str = "") -> None:
        self.root = root
        self.installed = installed
        self.dvc_env = environment()  # DVC's, and so its stages'
        # The stages' MLflow store: the spec's, unless their environment says.
        self.tracking_uri = chosen_uri(self.dvc_env, tracking_uri) or ""
        self.folder: str | None = None
        self.listener: socket.socket | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.served = 0  # stages the server ran, known once it stopped

    @classmethod
    @contextmanager
    def open(cls, root: Path, plan: Plan, *, eager: bool) -> Iterator[StageServer]:
        """Set up the socket and point DVC's environment at it; stop it all after.

        ``eager``: every stage will run (no dvc.lock yet, or --force), so start
        the server now; it imports while DVC starts and the first stage is warm
        too. Otherwise :meth:`start` waits for the first stage that runs.
        """
        from stages import warm

        server = cls(root, plan.framework.installed, plan.spec.storage.tracking_uri)
        try:
            if warm.enabled(server.dvc_env) and any(s.uses for s in plan.stages):
                server.listen(warm.ENV)
                if eager:
                    server.start()
            yield server
        finally:
            server.stop()

    def listen(self, variable: str) -> None:
        """Bind the socket; without a place for it, every stage runs cold."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.folder = tempfile.mkdtemp(prefix="mlops-stages-")  # 0700: ours only
            path = os.path.join(self.folder, "socket")
            listener.bind(path)
            listener.listen(16)
        except OSError:  # a read-only TMPDIR, one too long for a socket's path
            listener.close()
            return
        self.listener = listener
        self.dvc_env[variable] = path

    @property
    def startable(self) -> bool:
        """A socket is waiting and the server has not been started."""
        return self.listener is not None and self.proc is None

    def start(self, kinds: Iterable[str] | None = None) -> None:
        """Start the server, once; a no-op without a socket.

        ``kinds``: the built-in stages that may still run, when DVC has
        already skipped the others; the server imports only what they need.
        """
        if self.listener is None or self.proc is not None:
            return
        fd = self.listener.fileno()
        from stages import warm

        args = [sys.executable, "-m", "stages.warm", str(fd), str(os.getpid()),
                *warm.preload(self.tracking_uri, kinds)]  # fmt: skip
        if self.installed:
            args.insert(1, "-P")  # as `mlops stage` runs the stages
        try:
            self.proc = subprocess.Popen(
                args, cwd=self.root, env=environment(), pass_fds=(fd,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        except OSError:
            pass
        self.listener.close()  # the server's now, or nobody's: no stage waits
        self.listener = None

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.proc is not None:
            from stages import warm

            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            self.served = sum(line.startswith(warm.SERVED) for line in out.splitlines())
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    if proc.stdout is not None:
        yield from proc.stdout


def _dvc_process(
    root: Path, args: list[str], env: dict[str, str], early: EarlyDvc | None
) -> subprocess.Popen[str]:
    """``dvc <args>``: in the early process if there is one, else a new one."""
    if early is not None:
        return early.go(args, env)
    return subprocess.Popen(
        dvc(*args), cwd=root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
    )  # fmt: skip


def _failure(
    current: str | None, code: int, tail: deque[str], plan: Plan, root: Path
) -> tuple[str | None, str]:
    """The stage that failed (None if none can be named) and the run's error.

    DVC's own error names the stage: ``current`` (the last "Running stage")
    is a stage that finished when the next one failed before it ran, on an
    input that is not there.
    """
    from runner import diskfull, missinginput

    stage = missinginput.failed_stage(tail, plan) or current
    named = stage or "dvc repro"
    why = diskfull.explain(tail, plan, named) or missinginput.explain(
        tail, plan, named, root
    )
    return stage, f"stage {named!r} failed (dvc repro exited with {code}){why}"


@contextmanager
def _stage_error_file() -> Iterator[Path]:
    """An empty file for a failing built-in stage's message (ERROR_FILE_ENV)."""
    fd, name = tempfile.mkstemp(prefix="mlops-stage-error-")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _said(errors: Path) -> str:
    """What the failing stage said (one line), or ''."""
    try:
        text = errors.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _marked(text: str) -> tuple[re.Pattern[str], str] | None:
    """(marker, stage) for a line of `dvc repro` that reports on a stage."""
    for marker in (_RUNNING, _SKIPPED, _RESTORED, _PULLING):
        if m := marker.match(text):
            return marker, m.group(1)
    return None


def _may_run(plan: Plan, outcome: Outcome) -> list[str]:
    """The built-in stages DVC has not yet skipped or restored: DVC goes through
    the stages in order, so those it reported are settled."""
    settled = {*outcome.unchanged, *outcome.restored}
    return [s.uses for s in plan.stages if s.uses and s.name not in settled]


def _wants_warm(plan: Plan, running: str) -> bool:
    """Whether the stage DVC has started is a reason to start the warm server.

    A built-in stage asks the server at once. A custom one never does: it is
    a reason only when a built-in stage depends on it, and so will most
    likely run next. A custom stage that none depends on (a cost, a report)
    starts nothing: the server would import MLflow and scikit-learn beside it
    for built-in stages DVC is about to skip (in examples/custom-stages, a new
    price re-runs `cost` alone: 2.4 s and 3.4 CPU-seconds with the server,
    1.5 s and 1.8 without). A built-in stage that does run later starts the
    server then.
    """
    try:
        stage = plan.stage(running)
    except KeyError:  # not a stage of the spec's dvc.yaml: as if built-in
        return True
    if stage.uses:
        return True
    later = plan.downstream_closure({running}) - {running}
    return any(plan.stage(name).uses for name in later)


def _repro_args(*, force: bool, pull: bool) -> list[str]:
    from runner.targets.dvc import DVC_FILE

    return ["repro", *["--force"] * force, *["--pull"] * pull, DVC_FILE]


class _Progress:
    """What `dvc repro` says about each stage, as numbered progress lines."""

    def __init__(self, plan: Plan, say: Callable[[str], None]) -> None:
        self.planned = {s.name for s in plan.stages}
        self.say = say
        self.outcome = Outcome()
        self.current: tuple[str, float] | None = None  # the stage running now

    def finish(self) -> None:
        if self.current is not None:
            name, t0 = self.current
            self.say(f"--- {name}: done in {time.monotonic() - t0:.1f}s")
            self.current = None

    def _step(self, name: str, what: str, into: list[str]) -> None:
        self.finish()
        done = self.outcome
        step = len(done.ran) + len(done.unchanged) + len(done.restored)
        into.append(name)
        self.say(f"[{step + 1}/{len(self.planned)}] {name}: {what}")

    def line(self, text: str) -> None:
        done = self.outcome
        marked = _marked(text)
        if marked is None:
            if text.strip() and not text.startswith(SETUP_PREFIX):
                self.say("    " + text)  # a set-up failure is said once, as the error
            return
        marker, name = marked
        if name not in self.planned:
            # A data file DVC tracks (`dvc add`), which DVC treats as a stage:
            # not one of the spec's, so neither counted nor shown as one.
            self.say("    " + text)
            return
        if marker in (_RUNNING, _RESTORED) and name in done.unchanged:
            done.unchanged.remove(name)  # its pull failed
        if marker is _PULLING:
            self._step(name, "unchanged, pulling its outputs", done.unchanged)
        elif marker is _RUNNING:
            self._step(name, "running", done.ran)
            self.current = (name, time.monotonic())
        elif marker is _SKIPPED:
            self._step(name, "unchanged, skipped", done.unchanged)
        else:
            self._step(name, "restored from the run-cache", done.restored)


def repro(
    root: Path,
    plan: Plan,
    say: Callable[[str], None],
    *,
    force: bool = False,
    pull: bool = False,
    early: EarlyDvc | None = None,
) -> Outcome:
    """Run `dvc repro`, passing its output through with progress markers.

    With ``pull``, DVC first fetches the remote's run-cache, restores every
    stage it finds there instead of running it, and pulls the outputs of
    unchanged stages that this checkout lacks (what CI and Argo tasks do).
    ``early``: the DVC process to run it in (:class:`EarlyDvc`), else a new one.
    """
    progress = _Progress(plan, say)
    started = time.monotonic()
    # Not --allow-missing: with it DVC skips an unchanged stage whose outputs
    # are absent instead of pulling them, and downstream stages lack inputs.
    args = _repro_args(force=force, pull=pull)
    tail: deque[str] = deque(maxlen=40)  # where a stage's last error is
    with (
        _stage_error_file() as errors,
        StageServer.open(root, plan, eager=force or not (root / DVC_LOCK).exists())
        as server,
        _dvc_process(root, args, {**server.dvc_env, ERROR_FILE_ENV: str(errors)},
                     early) as proc,
    ):  # fmt: skip
        for line in _lines(proc):
            text = line.rstrip("\n")
            tail.append(text)
            # The first stage that runs starts the server (none for a no-op).
            if (m := _RUNNING.match(text)) and server.startable:
                if _wants_warm(plan, m.group(1)):
                    server.start(_may_run(plan, progress.outcome))
            progress.line(text)
        code = proc.wait()
        said = _said(errors) if code != 0 else ""
    outcome = progress.outcome
    outcome.warm = server.served
    outcome.seconds = time.monotonic() - started
    if failed := _setup_failure(code, tail):
        raise failed
    if code != 0:
        running = progress.current
        outcome.failed, message = _failure(
            running[0] if running else None, code, tail, plan, root
        )
        if said:
            message += f": {said}"
        if outcome.failed in outcome.ran:
            outcome.ran.remove(outcome.failed)  # it started; it did not run
        raise StageFailed(message, outcome)
    progress.finish()
    return outcome


def push(root: Path, stages: list[str], say: Callable[[str], None]) -> None:
    """Push outputs and the run-cache, git-kept outputs included (runner.runcache)."""
    out = _run([sys.executable, "-m", "runner.runcache", *stages], root, "push")
    for line in out.splitlines():
        say(line)
