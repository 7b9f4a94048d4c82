"""The warm stage server (stages/warm.py): stages run by it behave as their own
processes would, to DVC and to the user, and nothing of one outlives it.

The unit half runs the real server on a package beside the test: the project's
``stages/__init__.py`` and ``warm.py`` next to small stage modules written here,
asked by real ``python -m stages.<name>`` processes, as DVC starts them. The
other half runs `mlops run` with and without the server and compares outputs.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

import stages
from stages import warm
from tests.support import ROOT, mlops, quiet_env, run

STAGE_MODULES = {
    # Prints who runs it and what it was given, then exits with argv's code.
    "probe": """
import gc, os, sys
print("pid", os.getpid(), "argv", *sys.argv[1:], "env", os.environ.get("PROBE"),
      "parent", os.getppid(), "gc", gc.get_threshold()[0])
print("to stderr", file=sys.stderr)
raise SystemExit(int(sys.argv[1]))
""",
    # Waits until killed, after saying it started.
    "sleepy": """
import os, pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(120)
""",
    "broken": "raise ValueError('a bug in the stage')\n",
    # A built-in's name: says which of what the server imports it was forked with.
    "ingest": """
import sys
print(*sorted(m for m in sys.argv[1:] if m in sys.modules))
""",
}


@dataclass
class Server:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]

    def stage(self, name: str, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", f"stages.{name}", *args],
            cwd=self.root,
            env=kw.get("env", self.env),  # type: ignore[arg-type]
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _package(tmp_path: Path) -> Path:
    """A repository whose stages package is warm.py and STAGE_MODULES."""
    root = tmp_path / "repo"
    (root / "stages").mkdir(parents=True)
    for name in ("__init__.py", "warm.py"):
        shutil.copy(ROOT / "stages" / name, root / "stages" / name)
    for name, code in STAGE_MODULES.items():
        (root / "stages" / f"{name}.py").write_text(code)
    return root


def _server_env() -> dict[str, str]:
    env = quiet_env()
    env.pop("PYTHONPATH", None)
    return env


def _spawn(root: Path, listener: socket.socket, *preload: str) -> subprocess.Popen[str]:
    """The server on ``listener``, importing ``preload``; the listener is its."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.warm", str(listener.fileno()),
         str(os.getpid()), *preload],
        cwd=root, env=_server_env(), pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    listener.close()
    return proc


def _listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    return listener


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = _package(tmp_path)
    path = tmp_path / "s"
    proc = _spawn(root, _listen(path), "json")
    try:
        yield Server(
            root, {**_server_env(), warm.ENV: str(path), "PROBE": "given"}, proc
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _pid_of(out: str) -> int:
    return int(out.split()[1])


def test_a_stage_run_by_the_server_looks_like_its_own_process(server: Server) -> None:
    proc = server.stage("probe", "3", "more")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3  # its exit code
    words = out.split()
    assert words[2:7] == ["argv", "3", "more", "env", "given"], out
    assert err == "to stderr\n"  # its streams are the asker's
    assert _pid_of(out) != proc.pid  # and the server's forked child ran it
    # Forked, it collects cycles as a stage process started by Python does.
    batch = ["gc", str(stages.BATCH_GC_THRESHOLD)]
    assert words[7:] == ["parent", str(server.proc.pid), *batch], out
    cold = subprocess.run(
        [sys.executable, "-m", "stages.probe", "0"], cwd=server.root,
        env=_server_env(), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert cold.stdout.split()[-2:] == batch, cold.stdout

    broken = server.stage("broken")
    _, err = broken.communicate(timeout=30)
    assert broken.returncode == 1
    assert "ValueError: a bug in the stage" in err and "Traceback" in err


def test_a_stage_waits_for_what_it_needs_which_the_server_imports_first(
    tmp_path: Path,
) -> None:
    """Asked for ingest before anything is imported, the server imports
    ingest's preloads ahead of the rest and forks it once they are in."""
    root, path = _package(tmp_path), tmp_path / "s"
    listener = _listen(path)
    needs = list(warm.NEEDS["stages.ingest"])
    later = "sklearn.ensemble"  # first in the list, and not one of ingest's
    env = {**_server_env(), warm.ENV: str(path)}
    asker = subprocess.Popen(
        [sys.executable, "-m", "stages.ingest", later, *needs], cwd=root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Its request waits in the socket's queue before the server starts.
    assert select.select([listener], [], [], 30)[0], "the stage never asked"
    proc = _spawn(root, listener, later, *needs)
    try:
        out, err = asker.communicate(timeout=60)
        assert asker.returncode == 0, err
        assert out.split() == sorted(needs), out
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"{warm.SERVED} stages.ingest\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_what_the_server_imports_names_only_built_ins_and_its_own_preloads() -> None:
    from runner.builtins import BUILTINS, STAGES_PACKAGE

    everything = set(warm.preload("sqlite:///x.db"))
    assert everything == {*warm.PRELOAD, *warm.SQL_STORE}
    assert set(warm.preload("http://127.0.0.1:5000")) == set(warm.PRELOAD)
    assert {f"{STAGES_PACKAGE}.{kind}" for kind in BUILTINS} == set(warm.NEEDS)
    for module, needs in warm.NEEDS.items():
        assert set(needs) <= everything, module


def test_once_dvc_skipped_stages_the_server_imports_only_what_the_rest_need() -> None:
    from types import SimpleNamespace

    from runner.engine import Outcome, _may_run

    pipeline = [("ingest", "ingest"), ("validate", "validate"), ("mine", None),
                ("train", "train"), ("register", "register")]  # fmt: skip
    plan = SimpleNamespace(
        stages=[SimpleNamespace(name=n, uses=u) for n, u in pipeline]
    )
    outcome = Outcome(unchanged=["ingest", "validate"], restored=["train"])
    kinds = _may_run(plan, outcome)  # type: ignore[arg-type]
    assert kinds == ["register"]
    full, only = warm.preload("sqlite:///x.db"), warm.preload("sqlite:///x.db", kinds)
    assert set(only) == set(warm.NEEDS["stages.register"])
    assert only == [m for m in full if m in only]  # in the server's order
    assert "deepchecks.tabular" not in only and "sklearn.ensemble" not in only
    assert not set(warm.SQL_STORE) & set(warm.preload("http://127.0.0.1:5000", kinds))
    # Nothing settled yet, or a stage that needs everything: all of it.
    assert _may_run(plan, Outcome()) == ["ingest", "validate", "train", "register"]  # type: ignore[arg-type]
    assert warm.preload("sqlite:///x.db", ["evaluate"]) == full


def test_a_stage_gone_while_it_waits_is_never_forked(tmp_path: Path) -> None:
    root, path = _package(tmp_path), tmp_path / "s"
    listener = _listen(path)
    needs = list(warm.NEEDS["stages.ingest"])
    env = {**_server_env(), warm.ENV: str(path)}
    asker = subprocess.Popen(
        [sys.executable, "-m", "stages.ingest", *needs], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert select.select([listener], [], [], 30)[0], "the stage never asked"
    asker.kill()  # kill -9 while its request waits, as a killed DVC leaves it
    asker.wait(timeout=10)
    proc = _spawn(root, listener, *needs)
    try:
        subprocess.run(
            [sys.executable, "-m", "stages.probe", "0"], cwd=root, env=env,
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert out.splitlines() == [f"{warm.SERVED} stages.probe"], out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_what_would_start_another_interpreter_runs_in_its_own_process(
    server: Server,
) -> None:
    for change in ({"PYTHONHASHSEED": "7"}, {"OMP_NUM_THREADS": "1"}):
        proc = server.stage("probe", "0", env={**server.env, **change})
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert _pid_of(out) == proc.pid, change  # refused: ran itself
    elsewhere = server.stage("probe", "0", env={**server.env, warm.ENV: "/nonexistent"})
    out, _ = elsewhere.communicate(timeout=30)
    assert _pid_of(out) == elsewhere.pid  # no server: runs itself


def _wait_for(path: Path, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} not written in {seconds}s")


def _sleeping(
    server: Server, tmp_path: Path
) -> tuple[subprocess.Popen[str], psutil.Process]:
    """A stage process and the server's child running its stage, asleep."""
    started = tmp_path / "started"
    proc = server.stage("sleepy", str(started))
    child = psutil.Process(_wait_for(started))
    assert child.pid != proc.pid
    return proc, child


def test_killing_the_stage_process_kills_the_stage(
    server: Server, tmp_path: Path
) -> None:
    proc, child = _sleeping(server, tmp_path)
    proc.kill()  # kill -9: it cannot tell anyone
    proc.wait(timeout=10)
    child.wait(timeout=10)  # psutil.TimeoutExpired if the stage lived on


def test_a_signal_to_the_stage_process_reaches_the_stage(
    server: Server, tmp_path: Path
) -> None:
    proc, child = _sleeping(server, tmp_path)
    proc.send_signal(signal.SIGTERM)  # as DVC does on Ctrl-C
    proc.wait(timeout=10)
    child.wait(timeout=10)
    assert proc.returncode == -signal.SIGTERM  # died of it, as the stage did


def test_the_server_leaves_when_mlops_run_is_gone(tmp_path: Path) -> None:
    """Started by a process that then dies (kill -9 of `mlops run`): it exits."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    listener.listen(1)
    code = (
        "import os, subprocess, sys; fd = sys.argv[1]; "
        "p = subprocess.Popen([sys.executable, '-m', 'stages.warm', fd, "
        "str(os.getpid()), 'json'], pass_fds=(int(fd),)); print(p.pid, flush=True)"
    )
    parent = subprocess.run(
        [sys.executable, "-c", code, str(listener.fileno())],
        cwd=ROOT,
        env=quiet_env(),
        pass_fds=(listener.fileno(),),
        capture_output=True,
        text=True,
        check=True,
    )
    listener.close()
    psutil.Process(int(parent.stdout)).wait(timeout=15)


# -- under `mlops run` ---------------------------------------------------------

SPEC = """\
version: 1
project: {name: iris, task: classification, target: target, seed: 7}
data:
  iris: {sklearn: iris}
pipeline:
  ingest: {uses: ingest, with: {source: iris}}
  preprocess: {uses: preprocess, needs: [ingest]}
  train:
    uses: train
    needs: [preprocess]
    with: {estimator: sklearn.linear_model.LogisticRegression}
"""


def _outs(root: Path) -> dict[str, str]:
    doc = yaml.safe_load((root / "dvc.lock").read_text())
    return {
        o["path"]: o["md5"] for s in doc["stages"].values() for o in s.get("outs", [])
    }


def test_mlops_run_gives_the_same_outputs_warm_or_cold(repo: Path) -> None:
    (repo / "mlops.yaml").write_text(SPEC)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "spec"], cwd=repo)
    other = repo.parent / "cold"
    shutil.copytree(repo, other, symlinks=True)
    tmp = repo.parent / "tmp"
    tmp.mkdir()
    env = {**quiet_env(), "TMPDIR": str(tmp)}
    mlops_run = [sys.executable, "-m", "runner.cli", "run"]
    warm_out = run(mlops_run, cwd=repo, env=env).stdout
    assert warm_out.rstrip().endswith("(3 started warm)"), warm_out
    cold_out = run(mlops_run, cwd=other, env={**env, warm.SWITCH: "0"}).stdout
    assert "started warm" not in cold_out, cold_out
    warm_outs, cold_outs = _outs(repo), _outs(other)
    # The run's record (its MLflow run id) differs; everything else is equal.
    for outs in (warm_outs, cold_outs):
        outs.pop("artifacts/train/run.json")
    assert warm_outs == cold_outs
    assert not list(tmp.iterdir())  # the socket's folder is gone
    nothing = mlops("run", cwd=repo).stdout  # nothing to do: no server at all
    assert "started warm" not in nothing and "0 ran" in nothing, nothing


def test_without_a_place_for_the_socket_every_stage_runs_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only or missing TMPDIR costs the speed-up, never the run."""
    from types import SimpleNamespace

    from runner import engine

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    plan = SimpleNamespace(
        stages=[SimpleNamespace(uses="train")],
        framework=SimpleNamespace(installed=False),
        spec=SimpleNamespace(storage=SimpleNamespace(tracking_uri="sqlite:///x.db")),
    )
    with engine.StageServer.open(tmp_path, plan, eager=True) as server:  # type: ignore[arg-type]
        assert server.listener is None and server.proc is None
        assert warm.ENV not in server.dvc_env
    assert server.served == 0


def test_a_custom_stage_starts_the_server_only_for_built_ins_after_it() -> None:
    from runner import plan as planner
    from runner import spec as specs
    from runner.engine import _wants_warm

    plan = planner.build(specs.load(ROOT / "examples" / "custom-stages" / "mlops.yaml"))
    by_name = {s.name: s for s in plan.stages}
    assert by_name["cost"].uses is None and by_name["features"].uses is None
    # Nothing built-in reads cost's output: the server would only load for
    # stages DVC then skips.
    assert not _wants_warm(plan, "cost")
    # ingest reads what features writes: it and the rest run next, warm.
    assert _wants_warm(plan, "features")
    assert all(_wants_warm(plan, s.name) for s in plan.stages if s.uses)
    assert _wants_warm(plan, "not-a-stage")  # DVC's own name for one: as before
