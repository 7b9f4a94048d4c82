"""A run killed, run twice at once, or out of disk loses nothing (issue 12, 5-7).

A two-stage toy pipeline: ``prep`` copies an input file, ``slow`` writes a
2 MB output in chunks. While the tests hold it, ``slow`` writes half of its
output, touches a signal file and waits for a release file, so a test acts
while the output is half-written. One baseline run serves the module; each
test takes a private copy of it (git, DVC cache, run-cache and all).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runner.runlock import EXIT_BUSY
from tests.support import missing, mlops, quiet_env, run

# No test waits longer than this for anything.
BOUND_SECONDS = 30
SIZE = 2_000_000
SPEC = """\
version: 1
project: {name: faults, task: regression, target: y}
pipeline:
  prep:
    run: python scripts/prep.py
    deps: [scripts/prep.py, data/raw.txt]
    outs: [work/prep.txt]
  slow:
    run: python scripts/slow.py
    deps: [scripts/slow.py]
    needs: [prep]
    outs: [work/big.bin]
"""
PREP = """\
import pathlib
pathlib.Path("work").mkdir(exist_ok=True)
pathlib.Path("work/prep.txt").write_text(pathlib.Path("data/raw.txt").read_text())
"""
# H2_SIGNAL: touch it once half the output is written; then wait (bounded)
# for H2_RELEASE to exist before writing the rest.
SLOW = f"""\
import os, pathlib, sys, time
line = pathlib.Path("work/prep.txt").read_bytes()
data = (line * ({SIZE} // len(line) + 1))[:{SIZE}]
half = len(data) // 2
with open("work/big.bin", "wb") as out:
    out.write(data[:half])
    out.flush()
    if os.environ.get("H2_SIGNAL"):
        pathlib.Path(os.environ["H2_SIGNAL"]).touch()
        deadline = time.monotonic() + {BOUND_SECONDS}
        while not pathlib.Path(os.environ["H2_RELEASE"]).exists():
            if time.monotonic() > deadline:
                sys.exit("slow: never released")
            time.sleep(0.05)
    out.write(data[half:])
print("slow: wrote", len(data), "bytes", flush=True)
"""


def _digests(root: Path, folder: str) -> dict[str, str]:
    base = root / folder
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def _cache_sound(root: Path) -> dict[str, str]:
    """The DVC cache's objects; each must hash to its own name (md5)."""
    objects = root / ".dvc" / "cache" / "files" / "md5"
    found = {}
    for path in sorted(objects.rglob("*")):
        if path.is_file():
            name = path.parent.name + path.name
            digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324
            if not name.endswith(".dir"):
                assert digest == name, f"{path}: a corrupt cache object"
            found[name] = digest
    return found


class World:
    """A copy of the baseline run, and what the baseline left."""

    def __init__(self, root: Path, signal_dir: Path) -> None:
        self.root = root
        self.signal = signal_dir / "signal"
        self.release = signal_dir / "release"
        self.lock = (root / "dvc.lock").read_bytes()
        self.outputs = _digests(root, "work")
        self.raw = (root / "data" / "raw.txt").read_bytes()
        self.cache = _cache_sound(root)

    def env(self) -> dict[str, str]:
        return {
            **quiet_env(),
            "H2_SIGNAL": str(self.signal),
            "H2_RELEASE": str(self.release),
        }

    def start(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        """`mlops run ARGS` in its own process group, held at half its output."""
        return subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "run", *args],
            cwd=self.root, env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    def wait_half_written(self, proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + BOUND_SECONDS
        while not self.signal.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"run ended early:\n{out}\n{err}")
            assert time.monotonic() < deadline, "slow never signalled"
            time.sleep(0.05)
        size = (self.root / "work" / "big.bin").stat().st_size
        assert 0 < size < SIZE, f"work/big.bin is {size} bytes, not half-written"

    def assert_intact(self) -> None:
        """dvc.lock as the baseline left it, the input and the cache sound."""
        assert (self.root / "dvc.lock").read_bytes() == self.lock
        assert (self.root / "data" / "raw.txt").read_bytes() == self.raw
        cache = _cache_sound(self.root)
        assert self.cache.items() <= cache.items(), "a cache object went missing"

    def rerun_restores(self) -> str:
        """The next plain `mlops run` works and brings the outputs back."""
        out = mlops("run", cwd=self.root).stdout
        assert _digests(self.root, "work") == self.outputs
        assert (self.root / "dvc.lock").read_bytes() == self.lock
        return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run-faults") / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "mlops.yaml").write_text(SPEC)
    (root / "scripts" / "prep.py").write_text(PREP)
    (root / "scripts" / "slow.py").write_text(SLOW)
    (root / "data" / "raw.txt").write_text("the input data, one line of it\n")
    run(["git", "init", "-q"], cwd=root)
    mlops("run", cwd=root)
    return root


@pytest.fixture
def world(baseline: Path, tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "repo"
    shutil.copytree(baseline, root, symlinks=True)
    signals = tmp_path / "signals"
    signals.mkdir()
    yield World(root, signals)
    for proc in psutil.process_iter(["cwd"]):  # nothing of ours outlives a test
        try:
            if proc.info["cwd"] and Path(proc.info["cwd"]).is_relative_to(root):
                proc.kill()
        except psutil.Error:
            pass


def _restored(out: str) -> list[str]:
    return re.findall(r"\] (\S+): restored from the run-cache", out)


def test_kill_9_of_the_process_group_mid_write(world: World, figure) -> None:
    started = time.monotonic()
    proc = world.start("--force")
    world.wait_half_written(proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=BOUND_SECONDS)
    world.assert_intact()

    again = time.monotonic()
    out = world.rerun_restores()
    assert _restored(out) == ["slow"], out
    took = time.monotonic() - started
    figure(
        "fault",
        "kill -9 of `mlops run`'s process group while a stage writes its output",
        "dvc.lock unchanged, input and DVC cache intact; the next `mlops run`, "
        "with no clean-up, restored the previous output from the run-cache",
        seconds=round(took, 1),
        rerun_seconds=round(time.monotonic() - again, 1),
    )


def test_kill_9_of_mlops_alone_leaves_dvc_running(world: World, figure) -> None:
    started = time.monotonic()
    proc = world.start("--force")
    world.wait_half_written(proc)
    orphans = psutil.Process(proc.pid).children(recursive=True)
    assert orphans, "mlops started no dvc"
    proc.kill()  # mlops only: its dvc repro and the stage go on
    proc.communicate(timeout=BOUND_SECONDS)

    # While that dvc lives, a new run refuses at once and names it.
    t0 = time.monotonic()
    busy = mlops("run", cwd=world.root, check=False)
    refused = time.monotonic() - t0
    assert busy.returncode == EXIT_BUSY, busy.stderr
    dvc_pid = next(p.pid for p in orphans if "dvc" in " ".join(p.cmdline()))
    assert f"pid {dvc_pid}" in busy.stderr and "repro" in busy.stderr, busy.stderr
    assert (world.root / "dvc.lock").read_bytes() == world.lock

    world.release.touch()  # the stage ends; its print hits the closed pipe
    _, alive = psutil.wait_procs(orphans, timeout=BOUND_SECONDS)
    assert not alive, f"still running: {alive}"
    world.assert_intact()
    world.rerun_restores()
    figure(
        "fault",
        "kill -9 of the `mlops` process alone; its `dvc repro` and stage run on",
        "a new `mlops run` meanwhile exits 75 naming that dvc's pid; once it "
        "ended, dvc.lock was unchanged and the next run restored the outputs",
        seconds=round(time.monotonic() - started, 1),
        refused_seconds=round(refused, 1),
    )


def test_two_runs_at_once(world: World, figure) -> None:
    started = time.monotonic()
    first = world.start("--force")
    world.wait_half_written(first)
    generated = {p: (world.root / p).read_bytes() for p in ("dvc.yaml", "params.yaml")}
    # The second run's spec differs: had it compiled, params.yaml would show it.
    spec = world.root / "mlops.yaml"
    spec.write_text(
        SPEC.replace("outs: [work/big.bin]", "outs: [work/big.bin]\n    with: {n: 2}")
    )

    t0 = time.monotonic()
    second = mlops("run", cwd=world.root, check=False)
    refused = time.monotonic() - t0
    plan = mlops("plan", cwd=world.root, check=False)
    push = mlops("push", cwd=world.root, check=False)
    for proc in (second, plan, push):
        assert proc.returncode == EXIT_BUSY, proc.stderr
        assert f"pid {first.pid} (`mlops run --force`), running since 20" in (
            proc.stderr
        ), proc.stderr
        assert "running" not in proc.stdout, proc.stdout
    assert refused < 10, f"the second run took {refused:.1f}s to refuse"
    assert {p: (world.root / p).read_bytes() for p in generated} == generated

    world.release.touch()
    out, err = first.communicate(timeout=BOUND_SECONDS)
    assert first.returncode == 0, err
    assert "2 ran" in out
    spec.write_text(SPEC)
    world.assert_intact()
    assert _digests(world.root, "work") == world.outputs
    figure(
        "fault",
        "a second `mlops run` (and `plan`, `push`) while one runs",
        "exit 75 at once, naming the running one's pid, command and start; "
        "nothing compiled or written; the first finished unchanged",
        seconds=round(time.monotonic() - started, 1),
        refused_seconds=round(refused, 1),
    )


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_while_writing_outputs(world: World, figure) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "run", "--force"],
        cwd=world.root, env=quiet_env(), capture_output=True, text=True,
        preexec_fn=_file_size_limit(SIZE // 2), timeout=BOUND_SECONDS, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("mlops: error: stage 'slow' failed"), error
    assert "work/big.bin" in error and "File too large" in error, error
    world.assert_intact()

    out = world.rerun_restores()  # the limit lifted
    assert _restored(out) == ["slow"], out
    figure(
        "fault",
        "a file-size limit (RLIMIT_FSIZE, 1 MB) hit while a stage writes 2 MB",
        "exit 1 naming the stage, its output and 'File too large'; input, DVC "
        "cache and dvc.lock intact; the next run restored the output",
        seconds=round(took, 1),
    )


# Runs inside a private user and mount namespace (`unshare -Urm`), where it may
# mount a tmpfs without being root; the mount goes when the namespace ends.
# It reports what it saw as JSON, since the test cannot see into that mount.
DISK_FULL_DRIVER = """\
import hashlib, json, os, shutil, subprocess, sys
import yaml
baseline, mount, mode = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mount], check=True)
repo = os.path.join(mount, "repo")
shutil.copytree(baseline, repo, symlinks=True)

def read(path):
    with open(os.path.join(repo, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

def cache():
    objects, found = os.path.join(repo, ".dvc/cache/files/md5"), {}
    for folder, _, files in os.walk(objects):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                digest = hashlib.md5(f.read()).hexdigest()
            found[os.path.basename(folder) + name] = digest
    return found

def mlops(*args):
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=repo,
                          capture_output=True, text=True)
    return {"code": proc.returncode, "out": proc.stdout, "err": proc.stderr}

def state():
    with open(os.path.join(repo, "dvc.lock"), encoding="utf-8") as f:
        slow = yaml.safe_load(f)["stages"]["slow"]
    return {"lock": read("dvc.lock"), "slow": slow, "raw": read("data/raw.txt"),
            "cache": cache()}

before = state()
# 1 MB free, and 2 MB more once DVC removes the output it re-makes (if any).
if mode == "commit":  # a new input: the new output fits, its cache copy not
    with open(os.path.join(repo, "data/raw.txt"), "a") as f:
        f.write("one more line of input\\n")
    before["raw"] = read("data/raw.txt")
    args = ["run"]
else:  # no output to remove first: the stage's own write fails half-way
    os.remove(os.path.join(repo, "work/big.bin"))
    args = ["run", "--force"]
stat = os.statvfs(mount)
with open(os.path.join(mount, "filler"), "wb") as f:
    f.write(b"\\0" * (stat.f_bavail * stat.f_frsize - 1_000_000))
full = mlops(*args)
after = state()
os.remove(os.path.join(mount, "filler"))
again = mlops("run")
outputs = {p: read(p) for p in ("work/prep.txt", "work/big.bin")}
print(json.dumps({"before": before, "full": full, "after": after,
                  "again": again, "outputs": outputs}))
"""


_OBJECT = re.compile(r"[0-9a-f]{32}(\.dir)?")


@pytest.mark.parametrize("mode", ["stage", "commit"])
def test_full_disk_while_writing_outputs(
    world: World, tmp_path: Path, mode: str, figure
) -> None:
    """A real ENOSPC: the repository and its DVC cache on a full 8 MB tmpfs.

    ``stage``: the stage's own write fails half-way. ``commit``: the input
    changed, the stage's new output fits, DVC's copy of it into the cache
    does not.
    """
    import json

    if shutil.which("unshare") is None:
        missing("unshare (util-linux) is not installed")
    mount = tmp_path / "mnt"
    mount.mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, "-c", DISK_FULL_DRIVER,
         str(world.root), str(mount), mode],
        env=quiet_env(), capture_output=True, text=True, timeout=BOUND_SECONDS,
        check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    if proc.returncode != 0 and "unshare" in proc.stderr:
        missing(f"a user and mount namespace is not permitted here: {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    full, before, after = seen["full"], seen["before"], seen["after"]
    assert full["code"] == 1, full
    error = full["err"].strip().splitlines()[-1]
    assert error.startswith("mlops: error: stage 'slow' failed"), error
    assert "work/big.bin" in error and "No space left on device" in error, error
    # In "commit" mode prep ran on its new input and DVC recorded it; the
    # failed stage's record must stay the last good run's.
    assert after["slow"] == before["slow"], "dvc.lock changed slow's record"
    if mode == "stage":
        assert after["lock"] == before["lock"], "dvc.lock changed"
    assert after["raw"] == before["raw"], "the input changed"
    assert before["cache"].items() <= after["cache"].items(), "cache objects lost"
    # Objects are <2 hex>/<30 hex>[.dir]; anything else is DVC's own temp file
    # (after ENOSPC in its cache copy, an empty `md5/<random>.tmp` is left).
    objects = {n: d for n, d in after["cache"].items() if _OBJECT.fullmatch(n)}
    strays = sorted(set(after["cache"]) - set(objects))
    for name, digest in objects.items():
        assert name.endswith(".dir") or digest == name, f"corrupt cache: {name}"
    assert all(n.endswith(".tmp") for n in strays), strays
    assert seen["again"]["code"] == 0, seen["again"]
    if mode == "stage":
        assert seen["outputs"]["work/big.bin"] == world.outputs["big.bin"]
    figure(
        "fault",
        f"a full disk (8 MB tmpfs holding the repository and its DVC cache) "
        f"while {'a stage writes' if mode == 'stage' else 'DVC caches'} a 2 MB output",
        "exit 1 naming the stage, its output and 'No space left on device'; "
        "input, dvc.lock and every cache object intact; the next run, with "
        "space freed, worked",
        seconds=round(took, 1),
        temp_files_left=len(strays),
    )
