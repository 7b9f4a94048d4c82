"""`mlops init`: a spec from a CSV, the ignore files, refusals, and a real run.

Inference and rules are checked on small DataFrames; refusals and --force
through the CLI in-process; one spec end to end through the installed wheel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from runner import MAIN_BRANCH, cli, init, initspec
from runner import spec as specs
from runner.write import HEADER
from tests.installed import Installed, installed_framework
from tests.support import ROOT, TEST_ENV, dvc

SEED = 3  # every table is drawn afresh from it: the same rows in any test order
N = 120


def _classes() -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    x = rng.normal(0, 1, N)
    return pd.DataFrame(
        {
            "customer": [f"c{i:04d}" for i in range(N)],
            "age": rng.integers(18, 90, N),
            "score": x.round(3),
            "plan": rng.choice(["basic", "pro", None], N, p=[0.6, 0.35, 0.05]),
            "churned": (x + rng.normal(0, 0.5, N) > 0).astype(int),
        }
    )


def _prices() -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    size = rng.uniform(30, 200, N).round(1)
    rooms = rng.integers(1, 7, N)
    return pd.DataFrame(
        {
            "size_m2": size,
            "rooms": rooms,
            "district": rng.choice(["north", "south", "east"], N),
            "price": (size * 3100 + rooms * 9000 + rng.normal(0, 20000, N)).round(0),
        }
    )


def _repo(tmp_path: Path, frame: pd.DataFrame, name: str = "data/table.csv") -> Path:
    root = tmp_path / "team"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / name, index=False)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _init(
    root: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`mlops init` in-process in root: (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    monkeypatch.chdir(root)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["init", *args])
    return code, out.getvalue(), err.getvalue()


def _look(frame: pd.DataFrame, sampled: bool = False) -> initspec.Look:
    return initspec.Look(frame=frame, path="data/table.csv", sampled=sampled)


# -- the task and the rules, from the values ---------------------------------


@pytest.mark.parametrize(
    ("values", "task", "why"),
    [
        (["a", "b", "a"], "classification", "holds text (2 distinct values)"),
        ([True, False, True], "classification", "holds true/false values"),
        ([0, 1, 1, 2], "classification", "holds 3 distinct whole numbers"),
        ([1.0, 2.0, np.nan, 2.0], "classification", "holds 2 distinct whole"),
        ([0.5, 1.25, 3.0], "regression", "holds numbers with 3 distinct values"),
        (list(range(21)), "regression", "holds whole numbers with 21 distinct"),
    ],
)
def test_task_comes_from_the_target_column(
    values: list[object], task: str, why: str
) -> None:
    got, reason = initspec.infer_task(pd.Series(values, name="y"))
    assert got == task
    assert why in reason and reason.startswith("'y' ")


def test_rules_come_from_the_values() -> None:
    frame = _classes()
    rules = {c: initspec.profile(frame[c], target=c == "churned", task="classification")
             for c in frame.columns}  # fmt: skip
    age, ages = rules["age"].rule, frame["age"]
    assert age["type"] == "integer" and age["min"] == 0  # 18 is near 0 for 18..89
    assert isinstance(age["max"], int)
    assert ages.max() + 0.1 * (ages.max() - ages.min()) <= age["max"]
    assert age["max"] <= 1.2 * ages.max()
    score = rules["score"].rule
    assert score["type"] == "float" and score["min"] <= frame["score"].min() < 0
    assert score["max"] >= frame["score"].max()
    plan = rules["plan"].rule
    share = frame["plan"].isna().mean()
    assert plan["type"] == "category" and plan["allowed"] == ["basic", "pro"]
    assert share < plan["max_null_share"] <= share + 0.06
    assert rules["churned"].rule == {
        "type": "integer", "allowed": [0, 1], "max_null_share": 0,
    }  # fmt: skip
    assert rules["customer"].rule == {
        "type": "string",
        "unique": True,
        "max_null_share": 0,
    }
    assert "identifier" in rules["customer"].drop
    assert not any(rules[c].drop for c in ("age", "score", "plan", "churned"))


def test_bounds_round_away_from_the_data() -> None:
    assert initspec._round_out(58.2, up=True) == 59
    assert initspec._round_out(33.5, up=False) == 33
    assert initspec._round_out(-0.0123, up=False) == -0.013
    assert initspec._round_out(2009, up=True) == 2100
    assert initspec._round_out(0, up=True) == 0


def test_the_spec_is_valid_and_the_same_every_time() -> None:
    frame = _classes()
    task, why = initspec.infer_task(frame["churned"])
    text = initspec.render(_look(frame), "churned", "churn", task, why)
    assert text == initspec.render(_look(frame.copy()), "churned", "churn", task, why)
    spec = specs.parse(text)
    assert spec.project.task == "classification" and spec.project.target == "churned"
    assert f"# classification: {why}." in text
    stages = {s.name: s for s in spec.stages}
    assert stages["preprocess"].settings["drop"] == ["customer"]
    assert stages["preprocess"].settings["split"]["method"] == "stratified"
    assert stages["validate"].settings["rows"] == {"min": N // 2}
    assert [g["metric"] for g in spec.gates] == ["balanced_accuracy", "f1"]
    assert spec.gates[0]["min"] == 0.51  # better than guessing between two
    doc = yaml.safe_load(text)
    assert doc["storage"]["remote"]["url"] == ".mlops/dvc-remote"


def test_a_regression_spec_gates_on_r2() -> None:
    frame = _prices()
    task, why = initspec.infer_task(frame["price"])
    spec = specs.parse(initspec.render(_look(frame), "price", "prices", task, why))
    assert spec.project.task == "regression"
    assert spec.stage("preprocess").settings["split"]["method"] == "random"
    assert spec.stage("train").settings["estimator"].endswith("RandomForestRegressor")
    assert [(g["metric"], g.get("min"), g.get("max_drop")) for g in spec.gates] == [
        ("r2", 0, None),
        ("r2", None, 0.02),
    ]


def test_rules_from_a_sample_only_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path, _classes())
    monkeypatch.setattr(init, "SAMPLE_ROWS", 50)
    look = init.read(root, "data/table.csv")
    assert look.sampled and len(look.frame) == 50
    text = initspec.render(look, "churned", "churn", "classification", "why")
    assert "From the first 50 rows only" in text
    rules = specs.parse(text).stage("validate").settings["columns"]
    assert {r["severity"] for r in rules.values()} == {"warning"}


# -- refusals: exit 2, the file or setting named, nothing written ------------


def _unreadable(root: Path) -> str:
    (root / "data" / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    return "data/bad.parquet"


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        (None, ["--data", "data/nope.csv", "--target", "x"], "--data data/nope.csv: no such file"),
        (None, ["--data", "../outside.csv", "--target", "x"], "outside the repository"),
        (None, ["--data", "data", "--target", "x"], "a folder, not a file"),
        ("pointer", ["--data", "data/big.csv", "--target", "x"], "no such file (DVC tracks it: `dvc pull big.csv.dvc` first)"),
        (None, ["--data", "data/table.csv", "--target", "churn"], "data/table.csv: no column 'churn'; did you mean 'churned'?"),
        (None, ["--data", "data/table.csv", "--target", "customer", "--task", "regression"], "not numeric; --task regression needs numbers"),
        (None, ["--data", "data/table.csv", "--target", "churned", "--name", "Bad_Name"], "--name 'Bad_Name': use lowercase"),
        ("constant", ["--data", "data/table.csv", "--target", "const"], "column 'const' has one value (7) on every row"),
        ("unlabelled", ["--data", "data/table.csv", "--target", "churned"], "column 'churned' is missing in 3 rows"),
        ("xlsx", ["--data", "data/table.xlsx", "--target", "churned"], "data/table.xlsx: cannot tell its format; use a .csv, .parquet or .json file"),
        ("parquet", ["--data", "data/bad.parquet", "--target", "churned"], "data/bad.parquet: cannot read it as PARQUET"),
        ("binary", ["--data", "data/table.csv", "--target", "churned"], "data/table.csv: cannot read it as CSV"),
        ("spec", ["--data", "data/table.csv", "--target", "churned"], "mlops.yaml exists; edit it, or pass --force"),
        ("dvc", ["--data", "data/table.csv", "--target", "churned"], "dvc.yaml exists and was not written by mlops compile"),
        ("subdir", ["--data", "table.csv", "--target", "churned"], "is inside the git repository"),
        ("framework", ["--data", "data/table.csv", "--target", "churned"], "the mlops framework's own source tree"),
    ],
)  # fmt: skip
def test_init_refuses_clearly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: str | None,
    args: list[str],
    expected: str,
) -> None:
    frame = _classes()
    if setup == "constant":
        frame["const"] = 7
    if setup == "unlabelled":
        frame["churned"] = frame["churned"].astype(float)
        frame.loc[[3, 9, 27], "churned"] = np.nan
    root = _repo(tmp_path, frame)
    (tmp_path / "outside.csv").write_text("x,y\n1,2\n")
    cwd = root
    if setup == "pointer":
        (root / "data" / "big.csv.dvc").write_text("outs:\n- path: big.csv\n")
    if setup == "xlsx":
        (root / "data" / "table.xlsx").write_bytes(b"PK\x03\x04")
    if setup == "parquet":
        _unreadable(root)
    if setup == "binary":
        (root / "data" / "table.csv").write_bytes(b"\xff\xfe\x00\x81\x82" * 50)
    if setup == "spec":
        (root / "mlops.yaml").write_text("# ours\n")
    if setup == "dvc":
        (root / "dvc.yaml").write_text("stages: {}\n")
    if setup == "subdir":
        cwd = root / "data"
    if setup == "framework":
        for marker in init.FRAMEWORK_MARKERS:
            (root / marker).parent.mkdir(parents=True, exist_ok=True)
            (root / marker).write_text("")
    before = sorted(
        p.relative_to(root) for p in root.rglob("*") if ".git" not in p.parts
    )
    code, out, err = _init(cwd, monkeypatch, *args)
    assert code == cli.EXIT_SPEC, (out, err)
    assert err.startswith("mlops init: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    after = sorted(
        p.relative_to(root) for p in root.rglob("*") if ".git" not in p.parts
    )
    assert after == before  # nothing written, nothing initialised


def test_init_refuses_inside_this_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    for where in (ROOT, ROOT / "tests"):
        with pytest.raises(init.InitError, match="framework's own source tree"):
            init.repository(where)


# -- writing: ignore files, --force, a new folder ----------------------------


def test_force_rewrites_and_ignore_files_are_appended_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path, _classes())
    (root / ".gitignore").write_text("/.venv/\n*.log")  # no newline at the end
    args = ("--data", "data/table.csv", "--target", "churned", "--name", "churn")
    code, out, err = _init(root, monkeypatch, *args)
    assert code == 0, err
    assert "wrote mlops.yaml: classification of 'churned'" in out
    assert "initialised DVC" in out and out.endswith(
        init.next_steps("data/table.csv") + "\n"
    )
    gitignore = (root / ".gitignore").read_text()
    assert (
        gitignore
        == "/.venv/\n*.log\n# Added by mlops init.\n"
        + "\n".join(p for p in init.GITIGNORE if p != "/.venv/")
        + "\n"
    )
    dvcignore = (root / ".dvcignore").read_text()
    assert all(p in dvcignore.splitlines() for p in init.DVCIGNORE)
    spec = (root / "mlops.yaml").read_bytes()
    assert (root / "dvc.yaml").read_text().startswith(HEADER)
    assert specs.load(root / "mlops.yaml").project.name == "churn"

    code, _, err = _init(root, monkeypatch, *args)
    assert code == cli.EXIT_SPEC and "mlops.yaml exists" in err
    (root / "mlops.yaml").write_text("# edited by hand\n")
    code, out, err = _init(root, monkeypatch, *args, "--force")
    assert code == 0, err
    assert (root / "mlops.yaml").read_bytes() == spec  # deterministic
    assert (root / ".gitignore").read_text() == gitignore
    assert (root / ".dvcignore").read_text() == dvcignore
    assert "added" not in out


def test_generated_files_are_no_reason_to_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path, _prices())
    args = ("--data", "data/table.csv", "--target", "price")
    assert _init(root, monkeypatch, *args)[0] == 0
    (root / "mlops.yaml").unlink()  # dvc.yaml and the workflows stay
    code, out, err = _init(root, monkeypatch, *args)
    assert code == 0, err
    assert "regression of 'price'" in out


def test_a_new_folder_becomes_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "Fresh Folder"
    (root / "data").mkdir(parents=True)
    _prices().to_parquet(root / "data" / "homes.parquet")
    data = str(root / "data" / "homes.parquet")  # absolute, inside the folder
    # A user's git that names new branches otherwise: the workflows deploy from
    # main and reports compare with it, so the repository starts on main.
    config = tmp_path / "gitconfig"
    config.write_text("[init]\n\tdefaultBranch = master\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    code, out, err = _init(root, monkeypatch, "--data", data, "--target", "price")
    assert code == 0, err
    assert out.startswith("initialised git\n")
    head = (root / ".git" / "HEAD").read_text()
    assert head == f"ref: refs/heads/{MAIN_BRANCH}\n"
    assert (root / ".git").is_dir() and (root / ".dvc").is_dir()
    spec = specs.load(root / "mlops.yaml")
    assert spec.project.name == "fresh-folder"
    assert spec.data == {"homes": {"path": "data/homes.parquet"}}


def test_dvc_sees_only_the_pipeline_not_fixtures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path, _prices())
    code, _, err = _init(
        root, monkeypatch, "--data", "data/table.csv", "--target", "price"
    )
    assert code == 0, err
    fixture = root / "tests" / "golden" / "case" / "dvc.yaml"
    fixture.parent.mkdir(parents=True)
    fixture.write_text("stages:\n  train:\n    cmd: echo a fixture\n")
    listed = dvc("stage", "list", "--all", cwd=root).stdout
    assert [line.split()[0] for line in listed.splitlines()] == [
        "ingest", "validate", "preprocess", "train", "evaluate", "register",
    ], listed  # fmt: skip


def test_help_imports_no_heavy_library() -> None:
    probe = (
        "import sys\nfrom runner import cli\n"
        "try:\n    cli.main(['init', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'mlflow', 'deepchecks', 'sklearn', 'dvc')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert "--data FILE" in out
    assert out.splitlines()[-1] == "[]"


# -- end to end, through the installed wheel ---------------------------------


@pytest.fixture(scope="module")
def framework(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return installed_framework(tmp_path_factory)


def test_validate_and_run_pass_right_after_init(
    framework: Installed, tmp_path: Path
) -> None:
    root = _repo(tmp_path, _prices(), "data/prices.csv")
    out = framework.mlops("init", "--data", "data/prices.csv", "--target", "price",
                          cwd=root)  # fmt: skip
    assert "regression of 'price'" in out
    assert framework.mlops("validate", cwd=root) == "mlops.yaml: valid (6 stages)\n"
    out = framework.mlops("run", cwd=root)
    assert "6 stages, 6 ran" in out, out
    metrics = json.loads((root / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["r2"] > 0.8, metrics
    gates = json.loads((root / "artifacts/evaluate/gates.json").read_text())
    assert gates["passed"] is True, gates
    assert framework.mlops("compile", "--check", cwd=root) == (
        "generated files are up to date\n"
    )
    # The team's first edit: a smaller forest. The plan names only what it moves.
    spec = root / "mlops.yaml"
    text = spec.read_text()
    assert text.count("params: {n_estimators: 200}") == 1, text
    spec.write_text(text.replace("n_estimators: 200", "n_estimators: 50"))
    plan = framework.mlops("plan", cwd=root)
    assert "3 of 6 stages would run:" in plan, plan
    assert "stages.train modified" in plan, plan
    assert plan.splitlines()[-1] == "unchanged: ingest, validate, preprocess", plan


def test_column_names_yaml_would_misread_are_quoted() -> None:
    rng = np.random.default_rng(SEED)
    names = ["on", "a: b", "#tag", "null", "1.5", "size (m²)", "- x"]
    frame = pd.DataFrame({n: rng.normal(0, 1, 30) for n in names})
    frame["mixed"] = ["a", 1, 2.5] * 10  # what a CSV read in chunks can give
    frame["yes"] = rng.choice(["no", "yes"], 30)
    text = initspec.render(_look(frame), "yes", "quoting", "classification", "why")
    spec = specs.parse(text)
    assert spec.project.target == "yes"
    assert list(spec.stage("validate").settings["columns"]) == [*names, "mixed", "yes"]
    assert spec.stage("validate").settings["columns"]["yes"]["allowed"] == ["no", "yes"]
