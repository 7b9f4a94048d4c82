"""Real DVC on generated files: dag, status, repro, and what `mlops plan` says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from runner import plan as planner
from runner import spec as specs
from tests.support import ROOT, dvc, mlops

SPEC = """\
version: 1
project: {name: toy, task: regression, target: y}
pipeline:
  make:
    run: python -c "import pathlib; pathlib.Path('data').mkdir(exist_ok=True); pathlib.Path('data/a.txt').write_text('3')"
    outs: [data/a.txt]
  double:
    run: python scripts/double.py
    deps: [scripts/double.py]
    needs: [make]
    outs: [data/b.txt]
    with: {factor: 2}
  report:
    run: python scripts/report.py
    needs: [double]
    metrics: [report.json]
"""
DOUBLE = """\
import pathlib, yaml
factor = yaml.safe_load(open("params.yaml"))["stages"]["double"]["with"]["factor"]
value = int(pathlib.Path("data/a.txt").read_text()) * factor
pathlib.Path("data/b.txt").write_text(str(value))
"""
REPORT = """\
import json, pathlib
json.dump({"value": int(pathlib.Path("data/b.txt").read_text())}, open("report.json", "w"))
"""


def _toy(repo: Path) -> Path:
    (repo / "mlops.yaml").write_text(SPEC)
    (repo / "scripts").mkdir()
    (repo / "scripts" / "double.py").write_text(DOUBLE)
    (repo / "scripts" / "report.py").write_text(REPORT)
    return repo


def _ran(out: str) -> list[str]:
    return re.findall(r"\] (\S+): running", out)


def test_dag_matches_the_plan(repo: Path) -> None:
    _toy(repo)
    mlops("compile", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dot = dvc("dag", "--dot", cwd=repo).stdout
    edges = set(re.findall(r'"([\w-]+)" -> "([\w-]+)"', dot))
    plan = planner.build(specs.load(repo / "mlops.yaml"))
    assert edges == set(plan.edges) == {("make", "double"), ("double", "report")}


def test_run_plan_and_rerun(repo: Path) -> None:
    _toy(repo)
    planned = mlops("plan", cwd=repo).stdout
    assert "3 of 3 stages would run" in planned

    first = mlops("run", cwd=repo).stdout
    assert _ran(first) == ["make", "double", "report"]
    assert json.loads((repo / "report.json").read_text()) == {"value": 6}
    assert "3 stages, 3 ran, 0 unchanged" in first

    second = mlops("run", cwd=repo).stdout
    assert _ran(second) == []
    assert "3 stages, 0 ran, 3 unchanged" in second
    assert "0 of 3 stages would run" in mlops("plan", cwd=repo).stdout
    assert dvc("status", cwd=repo).stdout.strip().endswith("up to date.")

    # One parameter changes: that stage and what follows it re-run, not before.
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("factor: 2", "factor: 5"))
    planned = mlops("plan", cwd=repo).stdout
    assert "2 of 3 stages would run" in planned
    assert re.search(
        r"double\s+changed deps: params.yaml \(stages.double modified\)", planned
    )
    assert re.search(r"report\s+after double", planned)
    third = mlops("run", cwd=repo).stdout
    assert _ran(third) == ["double", "report"]
    assert json.loads((repo / "report.json").read_text()) == {"value": 15}


def test_plan_run_and_push_count_only_the_specs_own_dvc_yaml(repo: Path) -> None:
    # Another dvc.yaml with the same stage names and no .dvcignore to hide it,
    # as tests/golden/*/dvc.yaml are in this repository: always out of date.
    _toy(repo)
    other = repo / "fixtures" / "golden"
    other.mkdir(parents=True)
    (other / "dvc.yaml").write_text(
        "stages:\n  double:\n    cmd: exit 1\n    deps: [missing.txt]\n"
        "    outs: [never.txt]\n"
    )
    mlops("run", cwd=repo)
    planned = mlops("plan", cwd=repo).stdout
    assert planned.splitlines()[0] == "0 of 3 stages would run:", planned
    assert "missing.txt" not in planned
    assert "3 stages, 0 ran, 3 unchanged" in mlops("run", cwd=repo).stdout
    pushed = mlops("push", cwd=repo).stdout
    assert "pushed" in pushed and not (other / "never.txt").exists()


def test_compile_check_names_stale_files(repo: Path) -> None:
    _toy(repo)
    mlops("compile", cwd=repo)
    assert mlops("compile", "--check", cwd=repo).returncode == 0
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("factor: 2", "factor: 3"))
    before = (repo / "params.yaml").read_bytes()
    proc = mlops("compile", "--check", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "params.yaml: stale" in proc.stderr
    assert "dvc.yaml" not in proc.stderr  # the pipeline's shape did not change
    assert (repo / "params.yaml").read_bytes() == before  # --check writes nothing


def test_a_failing_stage_stops_the_run(repo: Path) -> None:
    _toy(repo)
    (repo / "scripts" / "double.py").write_text(
        "raise SystemExit('double: bad input')\n"
    )
    proc = mlops("run", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "stage 'double' failed" in proc.stderr
    assert "bad input" in proc.stdout
    assert not (repo / "report.json").exists()
    # The record says where it stopped; make ran before it, double did not.
    last = json.loads((repo / ".mlops" / "last-run.json").read_text())
    assert (last["ran"], last["failed"]) == (["make"], "double")
    assert last["error"].startswith("stage 'double' failed (dvc repro exited with")
    # The report says the run failed and shows nothing an earlier run left;
    # no gate check passes on an earlier run's verdicts.
    mlops("report", "--output", "out", cwd=repo)
    report = (repo / "out" / "report.md").read_text()
    assert report.splitlines()[2] == "❌ **The pipeline failed at stage `double`.**"
    assert "- **Failed**: `double`" in report and "Gates" not in report
    for command in ("gates", "promote"):
        proc = mlops(command, cwd=repo, check=False)
        assert proc.returncode == 1, command
        assert "the last run failed at stage 'double'" in proc.stderr, command
    # Fixed, the next run's record is a finished one.
    (repo / "scripts" / "double.py").write_text(DOUBLE)
    assert _ran(mlops("run", cwd=repo).stdout) == ["double", "report"]
    last = json.loads((repo / ".mlops" / "last-run.json").read_text())
    assert last["failed"] is None and last["error"] is None


def test_generated_dvc_yaml_is_what_dvc_reads(repo: Path) -> None:
    _toy(repo)
    mlops("compile", cwd=repo)
    dvc("init", "-q", cwd=repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    listed = dvc("stage", "list", "--name-only", cwd=repo).stdout.split()
    assert listed == list(stages)


SQL_SPEC = """\
version: 1
project: {name: toy, task: classification, target: y}
data:
  rows: {sql: {url: "sqlite:///source.db", query: "SELECT * FROM t"}}
pipeline:
  ingest:
    uses: ingest
    with: {source: rows}
  count:
    run: python -c "import pyarrow.parquet as p, pathlib as q; q.Path('out').mkdir(exist_ok=True); q.Path('out/n.txt').write_text(str(p.ParquetFile('artifacts/ingest/data.parquet').metadata.num_rows))"
    deps: [artifacts/ingest/data.parquet]
    outs: [out/n.txt]
"""


def _rows(repo: Path, *values: int) -> None:
    import sqlite3

    with sqlite3.connect(repo / "source.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER, y INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(v, v % 2) for v in values])


def test_an_outside_source_is_read_every_run_but_rerun_only_on_change(
    repo: Path,
) -> None:
    (repo / "mlops.yaml").write_text(SQL_SPEC)
    _rows(repo, 1, 2)
    assert _ran(mlops("run", cwd=repo).stdout) == ["ingest", "count"]
    # Unchanged source: ingest reads it again, but its snapshot has the same
    # hash, so nothing after it runs.
    assert _ran(mlops("run", cwd=repo).stdout) == ["ingest"]
    assert (repo / "out/n.txt").read_text() == "2"
    _rows(repo, 3)
    assert _ran(mlops("run", cwd=repo).stdout) == ["ingest", "count"]
    assert (repo / "out/n.txt").read_text() == "3"


def test_a_need_becomes_a_dependency_on_its_verdict_or_its_outputs(
    repo: Path,
) -> None:
    example = planner.build(specs.load(ROOT / "mlops.yaml"))
    preprocess = example.stage("preprocess")
    assert "artifacts/validate/validation.json" in preprocess.deps
    # The HTML report differs on every run: depending on it would rerun
    # everything after validate and defeat the run-cache.
    assert "artifacts/validate/deepchecks.html" not in preprocess.deps
    _toy(repo)
    toy = planner.build(specs.load(repo / "mlops.yaml"))
    assert "data/b.txt" in toy.stage("report").deps  # `double` has no verdict


def test_every_builtin_depends_on_the_stage_modules_it_imports() -> None:
    # A stage's code is what it imports from the stages package: editing any
    # of it must re-run the stage, so each one is a declared dependency. The
    # package's own __init__ is not: it decides how a stage process starts (the
    # warm server) and ends (run_then_leave), not what the stage computes.
    import ast

    import stages
    from runner.builtins import BUILTINS, STAGES_PACKAGE

    for name, builtin in BUILTINS.items():
        tree = ast.parse((ROOT / builtin.module).read_text())
        from_package = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == STAGES_PACKAGE
            for alias in node.names
        }
        modules = {
            n for n in from_package if (ROOT / STAGES_PACKAGE / f"{n}.py").exists()
        }
        for attribute in from_package - modules:  # nothing else slips through
            assert (
                attribute in vars(stages)
                and not (ROOT / STAGES_PACKAGE / attribute).exists()
            ), attribute
        imported = {f"{STAGES_PACKAGE}/{n}.py" for n in modules} | {
            f"{node.module.replace('.', '/')}.py"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith(f"{STAGES_PACKAGE}.")
        }
        assert imported <= set(builtin.modules), (name, imported - set(builtin.modules))


def test_editing_a_deepchecks_helper_reruns_only_the_stages_that_use_deepchecks() -> (
    None
):
    # Issue 13: stages/common.py held them, so a change re-ran ingest too.
    example = planner.build(specs.load(ROOT / "mlops.yaml"))
    using = {s.name for s in example.stages if "stages/suites.py" in s.deps}
    assert using == {"validate", "evaluate"}
    assert all("stages/common.py" in s.deps for s in example.stages if s.uses)


def test_a_remote_at_an_absolute_path_is_set_once(repo: Path, tmp_path: Path) -> None:
    """DVC keeps an absolute local path as given: seen as set, not set again."""
    _toy(repo)
    store = tmp_path / "shared" / "dvc-remote"
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text() + f"storage:\n  remote: {{url: '{store}'}}\n")
    said = f"set DVC remote 'storage' to {store}"
    assert said in mlops("plan", cwd=repo).stdout
    assert f"url = {store}\n" in (repo / ".dvc" / "config").read_text()
    assert said not in mlops("plan", cwd=repo).stdout


CSV_SPEC = """\
version: 1
project: {name: toy, task: classification, target: yy}
data:
  rows:
    path: data/rows.csv
pipeline:
  ingest:
    uses: ingest
    with: {source: rows}
  validate:
    uses: validate
    needs: [ingest]
    with: {rows: {min: 1}}
"""


def test_a_missing_input_or_target_is_named_at_its_key_in_the_spec(
    repo: Path,
) -> None:
    (repo / "mlops.yaml").write_text(CSV_SPEC)
    (repo / "data").mkdir()
    (repo / "data" / "row.csv").write_text("x,y\n1,0\n2,1\n")
    proc = mlops("run", cwd=repo, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "mlops: error: stage 'ingest' failed (dvc repro exited with 255): "
        "its input 'data/rows.csv' does not exist (data source 'rows', "
        "mlops.yaml:5:5: data -> rows -> path); did you mean 'data/row.csv'?"
    )
    # Tracked by DVC (`dvc add`) but not checked out: DVC blames the .dvc
    # file; the error names the stage that reads it and how to get it.
    (repo / "data" / "row.csv").rename(repo / "data" / "rows.csv")
    dvc("add", "-q", "data/rows.csv", cwd=repo)
    (repo / "data" / "rows.csv").unlink()
    proc = mlops("run", cwd=repo, check=False)
    assert proc.stderr.strip().splitlines()[-1] == (
        "mlops: error: stage 'ingest' failed (dvc repro exited with 255): "
        "its input 'data/rows.csv' does not exist (data source 'rows', "
        "mlops.yaml:5:5: data -> rows -> path); data/rows.csv.dvc tracks it but "
        "this checkout lacks the data: run `mlops run --pull` or "
        "`dvc pull data/rows.csv`"
    )
    # Pulled, the data is read; the .dvc file is not counted as a stage, and
    # validate stops the run at project.target, before any other stage.
    proc = mlops("run", "--pull", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "[1/2] ingest: running" in proc.stdout
    assert "[2/2] validate: running" in proc.stdout
    assert "rows.csv.dvc:" not in proc.stdout
    said = (
        "mlops.yaml:2:44: project -> target: 'yy' is not a column of the data; "
        "did you mean 'y'? (columns: x, y)"
    )
    assert f"    validate: {said}\n" in proc.stdout
    # The run's own error repeats what the stage said (the line CI shows last).
    assert proc.stderr.strip().splitlines()[-1] == (
        f"mlops: error: stage 'validate' failed (dvc repro exited with 255): {said}"
    )
    assert not (repo / "artifacts" / "validate").exists()


def test_an_input_missing_after_a_stage_ran_is_blamed_on_the_stage_that_reads_it(
    repo: Path,
) -> None:
    # DVC checks `double`'s inputs after `make` ran: its "Running stage" line
    # was make's, but the run failed in double.
    _toy(repo)
    (repo / "scripts" / "double.py").unlink()
    proc = mlops("run", cwd=repo, check=False)
    assert proc.returncode == 1
    assert _ran(proc.stdout) == ["make"]
    assert proc.stderr.strip().splitlines()[-1] == (
        "mlops: error: stage 'double' failed (dvc repro exited with 255): "
        "its input 'scripts/double.py' does not exist"
    )


def test_a_run_that_stops_any_way_leaves_a_record_saying_so(tmp_path: Path) -> None:
    from runner import engine
    from runner.errors import Problem, RunError, SpecError

    def recorded(exc: BaseException) -> dict:
        engine.record_failure(tmp_path, exc)
        return json.loads((tmp_path / engine.LAST_RUN).read_text())

    ran = engine.Outcome(ran=["ingest"], unchanged=["validate"], failed="train")
    last = recorded(engine.StageFailed("stage 'train' failed", ran))
    assert (last["ran"], last["failed"], last["error"]) == (
        ["ingest"], "train", "stage 'train' failed"
    )  # fmt: skip
    assert recorded(RunError("the DVC remote is down"))["error"] == (
        "the DVC remote is down"
    )
    spec = SpecError("mlops.yaml", [Problem(3, 1, ("project",), "bad")])
    assert recorded(spec)["error"] == "mlops.yaml:3:1: project: bad"
    assert recorded(KeyboardInterrupt())["error"] == "the run was interrupted"
    # A fault of ours: its message may hold anything; the report gets its kind.
    last = recorded(ValueError("/home/me/secret-path"))
    assert last["error"] == "the run stopped on ValueError" and last["failed"] is None


def test_a_record_that_cannot_be_written_leaves_no_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from runner import engine
    from runner.errors import RunError

    engine.record(tmp_path, engine.Outcome(ran=["ingest"]))

    def full(root: Path, outcome: engine.Outcome) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine, "record", full)
    engine.record_failure(tmp_path, RunError("stage 'train' failed"))
    assert not (tmp_path / engine.LAST_RUN).exists()  # not a finished run's
