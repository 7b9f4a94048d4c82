"""Issue 12 item 10: a tampered model is refused by every command that loads one.

One copy of the session's finished example run, version 1 @production. Each
case restores the pristine model where each command reads it, tampers it, and
runs all five at once: evaluate and register read ``artifacts/train/model``;
``mlops deploy --check-only`` and ``mlops serve`` the serving cache
(``.mlops/serving/...``, used as is once present); ``mlops monitor`` downloads
the version from the MLflow store, tampered there. Each must exit non-zero with
``refusing the model at <dir>`` and the reason, and nothing planted may run:
the planted code (a skops node calling ``builtins.exec`` or ``os.system``, a
pickle, a loader module, a code path) would create a marker file.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import example_env, run

MODEL = "cancer-classifier"
LOCAL = Path("artifacts/train/model")
REFUSED = "refusing the model at "
TIMEOUT = 240


@dataclass(frozen=True)
class Repo:
    root: Path
    pristine: Path
    marker: Path
    outside: Path

    @property
    def places(self) -> dict[str, Path]:
        """Where each command reads the model (they differ, see the docstring)."""
        store = next(
            (self.root / ".mlops" / "mlartifacts").glob("*/models/*/artifacts")
        )
        cache = next((self.root / ".mlops" / "serving" / MODEL).glob("1-*/model"))
        return {"local": self.root / LOCAL, "cache": cache, "store": store}


# What each command runs (the CLI's argv) and where it reads the model.
COMMANDS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "evaluate": ("local", lambda: ["-m", "stages.evaluate", "evaluate"]),
    "register": ("local", lambda: ["-m", "stages.register", "register"]),
    "mlops monitor": (
        "store",
        lambda: [
            "-m",
            "runner.cli",
            "monitor",
            "--current",
            "current.csv",
            "--no-report",
        ],
    ),
    "mlops deploy --check-only": (
        "cache",
        lambda: [
            "-m",
            "runner.cli",
            "deploy",
            "--check-only",
            "--port",
            str(_free_port()),
        ],
    ),
    "mlops serve": (
        "cache",
        lambda: ["-m", "runner.cli", "serve", "--port", str(_free_port())],
    ),
}
# The stage module `mlops <command>` runs (runner.release.run_module), in-process.
_MAINS = {
    "serving": "stages.serving.cli",
    "deploy": "stages.deploy",
    "monitor": "stages.monitor.cli",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, example_run: Any) -> Repo:
    import mlflow
    import pandas as pd

    base = tmp_path_factory.mktemp("tampered")
    root = example_run.copy(base / "repo")
    client = mlflow.MlflowClient(f"sqlite:///{root / '.mlops' / 'mlflow.db'}")
    client.set_registered_model_alias(MODEL, "production", "1")
    test = pd.read_parquet(root / "artifacts" / "preprocess" / "test.parquet")
    test.drop(columns=["target"]).to_csv(root / "current.csv", index=False)
    # The serving cache as `mlops serve` leaves it: the version downloaded once.
    run([sys.executable, "-c", _PREFETCH], cwd=root, env=example_env())
    pristine = base / "pristine"
    shutil.copytree(root / LOCAL, pristine)
    outside = base / "outside"
    outside.mkdir()
    return Repo(root, pristine, base / "PLANTED-CODE-RAN", outside)


_PREFETCH = """
from pathlib import Path
from stages import common
from stages.serving import fetch
fetch.prepare(common.load_params(), None, fetch.CACHE)
"""


# --- the tamperings: each edits a model directory, given the test's Repo ---


def _mlmodel(model: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    conf = yaml.safe_load((model / "MLmodel").read_text(encoding="utf-8"))
    edit(conf)
    (model / "MLmodel").write_text(yaml.safe_dump(conf), encoding="utf-8")


def _flavor(name: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(conf: dict[str, Any]) -> None:
        conf["flavors"][name].update(changes)

    return edit


def _planted_skops(pristine: bytes, module: str, name: str, code: str) -> bytes:
    """The pipeline's archive with one more attribute: a node skops builds by
    calling ``module.name(code)``."""
    with zipfile.ZipFile(io.BytesIO(pristine)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(members["schema.json"])
    attrs = schema["content"]
    text = {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(code),
        "is_json": True,
        "__id__": 10**9,
    }
    args = {
        "__class__": "tuple",
        "__module__": "builtins",
        "__loader__": "TupleNode",
        "content": [text],
        "__id__": 10**9 + 1,
    }
    attrs["content"]["planted"] = {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": args,
        "__id__": 10**9 + 2,
    }
    key_types = attrs["key_types"]["content"]
    key_types.append({**key_types[0], "__id__": 10**9 + 3})
    members["schema.json"] = json.dumps(schema).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out.getvalue()


def _touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def _exec_skops(repo: Repo) -> bytes:
    data = (repo.pristine / "model.skops").read_bytes()
    return _planted_skops(data, "builtins", "exec", _touch(repo.marker))


def _loader_module(model: Path, repo: Repo) -> None:
    (model / "code").mkdir()
    (model / "code" / "planted_loader.py").write_text(_touch(repo.marker) + "\n")
    _mlmodel(model, _flavor("python_function", loader_module="planted_loader"))


def _no_sklearn_flavor(model: Path, repo: Repo) -> None:
    _mlmodel(model, lambda conf: conf["flavors"].pop("sklearn"))


def _cloudpickle(model: Path, repo: Repo) -> None:
    import pickle

    class Planted:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (_touch(repo.marker),))

    (model / "model.pkl").write_bytes(pickle.dumps(Planted()))
    _mlmodel(
        model,
        _flavor(
            "sklearn", serialization_format="cloudpickle", pickled_model="model.pkl"
        ),
    )
    _mlmodel(model, _flavor("python_function", model_path="model.pkl"))


def _code_paths(model: Path, repo: Repo) -> None:
    (model / "code").mkdir()
    (model / "code" / "sklearn_helpers.py").write_text(_touch(repo.marker) + "\n")
    _mlmodel(model, _flavor("sklearn", code="code"))


def _data_field(model: Path, repo: Repo) -> None:
    _mlmodel(model, _flavor("python_function", data=str(repo.outside)))


def _os_system(model: Path, repo: Repo) -> None:
    data = (repo.pristine / "model.skops").read_bytes()
    planted = _planted_skops(data, "os", "system", f"touch {repo.marker}")
    (model / "model.skops").write_bytes(planted)


def _builtins_exec(model: Path, repo: Repo) -> None:
    (model / "model.skops").write_bytes(_exec_skops(repo))


def _absolute_path(model: Path, repo: Repo) -> None:
    evil = repo.outside / "absolute.skops"
    evil.write_bytes(_exec_skops(repo))
    _mlmodel(model, _flavor("sklearn", pickled_model=str(evil)))
    _mlmodel(model, _flavor("python_function", model_path=str(evil)))


def _dotdot(model: Path, repo: Repo) -> None:
    (model.parent / "sibling.skops").write_bytes(_exec_skops(repo))
    _mlmodel(model, _flavor("sklearn", pickled_model="../sibling.skops"))
    _mlmodel(model, _flavor("python_function", model_path="../sibling.skops"))


def _symlink_out(model: Path, repo: Repo) -> None:
    evil = repo.outside / "linked.skops"
    evil.write_bytes(_exec_skops(repo))
    (model / "model.skops").unlink()
    (model / "model.skops").symlink_to(evil)


def _example_path(model: Path, repo: Repo) -> None:
    def edit(conf: dict[str, Any]) -> None:
        conf["saved_input_example_info"]["artifact_path"] = "../../../../etc/passwd"

    _mlmodel(model, edit)


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Path, Repo], None]
    expected: str  # a regex, after "refusing the model at <dir>: "
    what: str


CASES = {
    "loader-module": Case(
        _loader_module,
        r"python_function\.loader_module is 'planted_loader'; expected 'mlflow\.sklearn'",
        "MLmodel loader_module pointing at a planted module",
    ),
    "no-sklearn-flavor": Case(
        _no_sklearn_flavor,
        r"flavors are python_function; expected sklearn",
        "MLmodel without the sklearn flavor",
    ),
    "cloudpickle": Case(
        _cloudpickle,
        r"serialization_format is 'cloudpickle'; expected 'skops'",
        "MLmodel switched to a cloudpickle file that runs code",
    ),
    "code-paths": Case(
        _code_paths,
        r"flavors\.sklearn\.code is 'code'; expected null",
        "MLmodel naming code paths MLflow would import",
    ),
    "data-field": Case(
        _data_field,
        r"python_function has data; expected only",
        "MLmodel with a data path outside the directory",
    ),
    "type-outside-allow-list": Case(
        _os_system,
        r"outside the allow-list: os\.system",
        "skops node calling os.system",
    ),
    "builtins-exec": Case(
        _builtins_exec,
        r"callables skops would run: builtins\.exec",
        "skops node calling builtins.exec (passed the old prefix allow-list)",
    ),
    "absolute-pickled-model": Case(
        _absolute_path,
        r"pickled_model is '/[^']*absolute\.skops'; expected a relative path inside",
        "pickled_model an absolute path",
    ),
    "dotdot-pickled-model": Case(
        _dotdot,
        r"pickled_model is '\.\./sibling\.skops'; expected a relative path inside",
        "pickled_model escaping with ..",
    ),
    "symlink-out": Case(
        _symlink_out,
        # pickled_model resolving outside, or (any other file) the link itself
        r"\S*linked\.skops; expected (every file|a relative path) inside",
        "model.skops a symlink to a file outside",
    ),
    "example-path": Case(
        _example_path,
        r"saved_input_example_info\.artifact_path is '\.\./\.\./\.\./\.\./etc/passwd'",
        "input example path escaping the directory",
    ),
}
# MLflow's download from the store refuses a link out of the artifact root
# itself: monitor fails on that (exit 1, naming the file), before the gate.
DOWNLOADED = {"symlink-out": r"File model\.skops .*resolved path is outside"}


def _restore(repo: Repo) -> None:
    for place in repo.places.values():
        shutil.rmtree(place)
        shutil.copytree(repo.pristine, place)
    siblings = [
        p for place in repo.places.values() for p in place.parent.glob("*.skops")
    ]
    for leftover in (*repo.outside.iterdir(), *siblings):
        leftover.unlink()
    repo.marker.unlink(missing_ok=True)


def _in_process(argv: list[str]) -> int:
    """The command's own entry point, as its process would call it."""
    module, args = argv[1], argv[2:]
    main = importlib.import_module("runner.cli" if module == "runner.cli" else module)
    return int(main.main(args))


def _check(repo: Repo, name: str, command: str, text: str, code: Any) -> None:
    assert code not in (0, "timeout"), f"{command} exited {code}:\n{text}"
    case = CASES[name]
    where, _ = COMMANDS[command]
    if where == "store" and name in DOWNLOADED:
        assert re.search(DOWNLOADED[name], text), f"{command}:\n{text}"
        return
    assert REFUSED in text and re.search(case.expected, text), (
        f"{command} did not refuse with /{case.expected}/:\n{text}"
    )
    if where != "store":  # monitor names its temporary download
        shown = repo.places[where].relative_to(repo.root)
        assert f"{REFUSED}{shown}" in text, text


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_command_refuses_the_tampered_model(
    repo: Repo,
    name: str,
    figure: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Each command's entry point in this process (the CLI's run_module, which
    starts ``python -m stages.<module>``, calls the module's main here)."""
    from runner import release

    case = CASES[name]
    _restore(repo)
    for place in repo.places.values():
        case.tamper(place, repo)
    monkeypatch.chdir(repo.root)
    monkeypatch.setattr(
        release,
        "run_module",
        lambda root, module, args: importlib.import_module(_MAINS[module]).main(args),
    )
    sigterm = signal.getsignal(signal.SIGTERM)  # deploy's main sets its own
    start = time.perf_counter()
    try:
        for command, (_, argv) in COMMANDS.items():
            code = _in_process(argv())
            out, err = capfd.readouterr()
            _check(repo, name, command, out + err, code)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    took = time.perf_counter() - start
    assert not repo.marker.exists(), f"planted code ran: {repo.marker.read_text()}"
    figure(
        "security",
        f"tampered model: {case.what}",
        f"{', '.join(COMMANDS)} each exit non-zero naming the model dir and the "
        "reason; nothing planted ran",
        commands=len(COMMANDS),
        seconds=round(took, 1),
    )


def test_the_real_commands_refuse_a_skops_file_that_would_run_code(
    repo: Repo, figure: Any
) -> None:
    """The same, as separate processes through the CLI, for the case that ran
    code before the gate: a skops node calling ``builtins.exec``."""
    name = "builtins-exec"
    _restore(repo)
    for place in repo.places.values():
        CASES[name].tamper(place, repo)
    start = time.perf_counter()
    procs = {
        command: subprocess.Popen(
            [sys.executable, *argv()],
            cwd=repo.root,
            env=example_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for command, (_, argv) in COMMANDS.items()
    }
    for command, proc in procs.items():
        try:
            text, code = proc.communicate(timeout=TIMEOUT)[0], proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            text, code = proc.communicate()[0], "timeout"
        _check(repo, name, command, text, code)
    took = time.perf_counter() - start
    assert not repo.marker.exists(), f"planted code ran: {repo.marker.read_text()}"
    figure(
        "security",
        "tampered model through the CLI, one process per command: a skops node "
        "calling builtins.exec (the old allow-list let it run)",
        "all five exit non-zero naming the model dir; the marker the code would "
        "write does not exist",
        commands=len(COMMANDS),
        seconds=round(took, 1),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
