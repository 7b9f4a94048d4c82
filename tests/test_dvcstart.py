"""The DVC process started before the spec or the data is read (runner/dvcstart.py).

Real DVC throughout: the process is started in a repository, told to go (or
not), and what it runs, prints and exits with is checked, as is that a run
which stops before DVC is needed leaves no process and no file behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from runner import MAIN_BRANCH, engine
from runner.dvcstart import EarlyDvc, environment
from runner.errors import RunError
from tests.support import dvc, mlops, quiet_env, run

STAGE = """\
stages:
  echo:
    cmd: python -c "import os, pathlib; pathlib.Path('seen.txt').write_text(os.environ['DVCSTART_SEEN'])"
    outs: [seen.txt]
"""


def _dvc_repo(repo: Path) -> Path:
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(STAGE)
    return repo


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_it_runs_the_command_with_the_environment_it_is_sent(repo: Path) -> None:
    _dvc_repo(repo)
    env = {**environment(), "DVCSTART_SEEN": "sent with go"}
    with EarlyDvc.start(repo) as early:
        assert early is not None
        # Started before the variable existed: the stage sees the message's.
        proc = early.go(["repro", "dvc.yaml"], env)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert (repo / "seen.txt").read_text() == "sent with go"
    assert "Running stage 'echo'" in out  # its output reaches the pipe, flushed
    assert (repo / "dvc.lock").exists()


def test_dvcs_exit_code_passes_through(repo: Path) -> None:
    _dvc_repo(repo)
    with EarlyDvc.start(repo) as early:
        assert early is not None
        proc = early.go(["repro", "no-such.yaml"], environment())
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "no-such.yaml" in out


def test_one_never_told_to_go_touches_nothing_and_is_gone(repo: Path) -> None:
    with EarlyDvc.start(repo) as early:
        assert early is not None
        pid = early.proc.pid
    assert early.proc.returncode is not None  # reaped, not left running
    assert pid not in _processes_in(repo)
    assert sorted(p.name for p in repo.iterdir()) == [".git", "stages"]


def test_a_bad_spec_stops_the_run_before_dvc_and_leaves_no_process(
    repo: Path,
) -> None:
    (repo / "mlops.yaml").write_text("version: 1\nproject: {name: x}\n")
    proc = mlops("run", cwd=repo, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "mlops.yaml" in proc.stderr
    assert _processes_in(repo) == []
    assert not (repo / ".dvc").exists()
    assert not (repo / "dvc.yaml").exists()


def test_status_through_an_early_process_reads_its_json_apart_from_stderr(
    repo: Path,
) -> None:
    _dvc_repo(repo)
    with EarlyDvc.start(repo, merged=False) as early:
        status = engine.status(repo, early)
    assert status.reasons == {"echo": ["changed outs: seen.txt deleted"]}
    (repo / "dvc.yaml").write_text("stages: [not, a, mapping]\n")
    with EarlyDvc.start(repo, merged=False) as early, pytest.raises(RunError) as err:
        engine.status(repo, early)
    assert str(err.value).startswith("dvc status failed: ")


def test_set_up_runs_in_it_before_the_command_with_its_output_held_back(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "dvc.yaml").write_text(STAGE)
    store = tmp_path / "store"
    env = {**environment(), "DVCSTART_SEEN": "after set-up"}
    with EarlyDvc.start(repo) as early:
        assert early is not None
        early.before(["init", "-q"], "dvc init")
        early.before(["remote", "add", "--default", "s", str(store)], "dvc remote add")
        assert not (repo / ".dvc").exists()  # nothing runs before go
        proc = early.go(["repro", "dvc.yaml"], env)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"url = {store}" in (repo / ".dvc" / "config").read_text()
    assert "Setting 's' as a default remote" not in out  # remote add's chatter
    assert "Running stage 'echo'" in out
    assert (repo / "seen.txt").read_text() == "after set-up"


def test_a_failed_set_up_is_named_and_stops_the_command(repo: Path) -> None:
    (repo / "mlops.yaml").write_text(
        "version: 1\nproject: {name: toy, task: regression, target: y}\n"
        "pipeline:\n  echo:\n    run: python -c \"open('seen.txt', 'w')\"\n"
        "    outs: [seen.txt]\n"
    )
    dvc("init", "-q", cwd=repo)
    (repo / ".dvc" / "config").write_text("[core\nremote = \n")  # not INI
    for command in ("plan", "run"):
        proc = mlops(command, cwd=repo, check=False)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        error = proc.stderr.strip().splitlines()[-1]
        assert error.startswith("mlops: error: dvc remote add failed: ERROR: "), error
        assert "config" in error, error
        assert "Traceback" not in proc.stderr + proc.stdout
        said = proc.stdout + proc.stderr
        assert said.count("dvc remote add failed") == 1  # once, as the error
        assert not (repo / "seen.txt").exists()


def test_a_run_in_a_new_folder_starts_its_repository_on_main(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "mlops.yaml").write_text(
        "version: 1\nproject: {name: toy, task: regression, target: y}\n"
        "pipeline:\n  echo:\n    run: python -c \"open('seen.txt', 'w')\"\n"
        "    outs: [seen.txt]\n"
    )
    config = tmp_path / "gitconfig"
    config.write_text("[init]\n\tdefaultBranch = master\n")
    env = {**quiet_env(), "GIT_CONFIG_GLOBAL": str(config)}
    proc = run([sys.executable, "-m", "runner.cli", "plan"], cwd=folder, env=env)
    assert "initialised git" in proc.stdout + proc.stderr
    assert (folder / ".git" / "HEAD").read_text() == f"ref: refs/heads/{MAIN_BRANCH}\n"


def test_set_up_alone_runs_no_command(repo: Path, tmp_path: Path) -> None:
    # What `mlops init` asks of it: the set-up, then nothing (no repro).
    (repo / "dvc.yaml").write_text(STAGE)
    store = tmp_path / "store"
    with EarlyDvc.start(repo, merged=False) as early:
        assert early is not None
        early.before(["init", "-q"], "dvc init")
        early.before(["remote", "add", "--default", "s", str(store)], "dvc remote add")
        engine.set_up(early)
    assert early.proc.returncode == 0
    assert f"url = {store}" in (repo / ".dvc" / "config").read_text()
    assert not (repo / "seen.txt").exists() and not (repo / "dvc.lock").exists()
    # Nothing to set up: the process is never told to go, and is gone.
    with EarlyDvc.start(repo, merged=False) as early:
        assert early is not None
        engine.set_up(early)
        assert early.fd is not None  # still waiting: set_up sent nothing
    assert early.proc.returncode is not None
    assert early.proc.pid not in _processes_in(repo)


def test_init_names_a_failed_dvc_set_up_and_leaves_no_process(repo: Path) -> None:
    data = repo / "data" / "table.csv"
    data.parent.mkdir()
    data.write_text("x,y\n" + "".join(f"{i},{i % 7 * 1.5}\n" for i in range(60)))
    dvc("init", "-q", cwd=repo)
    (repo / ".dvc" / "config").write_text("[core\nremote = \n")  # not INI
    proc = mlops("init", "--data", "data/table.csv", "--target", "y", cwd=repo,
                 check=False)  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("mlops: error: dvc remote add failed: ERROR: "), error
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (proc.stdout + proc.stderr).count("dvc remote add failed") == 1
    assert _processes_in(repo) == []
    # Repaired, the same command sets up what it could not.
    shutil.rmtree(repo / ".dvc")
    out = mlops("init", "--data", "data/table.csv", "--target", "y", "--force",
                cwd=repo).stdout  # fmt: skip
    assert "initialised DVC" in out and "set DVC remote 'storage'" in out, out
    assert "url = ../.mlops/dvc-remote" in (repo / ".dvc" / "config").read_text()
