"""`mlops retrain`: the spec edit, its compiled output, ingest's append, the
labelled rows, and the command in a temporary git repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runner import compile as compiler
from runner import retrain
from runner import spec as specs
from runner.errors import RunError
from stages import common, ingest
from stages import retrain as rows_mod
from stages.monitor import current as cur_mod
from tests.support import ROOT, mlops, run

EXAMPLE = (ROOT / "mlops.yaml").read_text()
FILE = "data/retrain/breast-cancer-2026-12-01.csv"
ENV = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "octo/cancer-classifier",
    "GITHUB_RUN_ID": "42",
}


def _append(text: str, source: str = "breast-cancer", path: str = FILE) -> str:
    return retrain.add_append(text, source, path)


# -- the spec edit -------------------------------------------------------------


def test_the_edit_inserts_lines_only_and_keeps_every_comment() -> None:
    edited = _append(EXAMPLE)
    assert [line for line in edited.splitlines() if line not in EXAMPLE] == [
        "    append:",
        f"      - {FILE}",
    ]
    assert set(EXAMPLE.splitlines()) <= set(edited.splitlines())
    source = specs.parse(edited).data["breast-cancer"]
    assert source == {"sklearn": "breast_cancer", "append": [FILE]}


def test_the_same_file_twice_is_no_change_and_a_second_day_is_appended() -> None:
    once = _append(EXAMPLE)
    assert _append(once) == once
    later = "data/retrain/breast-cancer-2026-12-08.csv"
    twice = _append(once, path=later)
    assert specs.parse(twice).data["breast-cancer"]["append"] == [FILE, later]
    assert f"      - {FILE}\n      - {later}\n" in twice


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "  points: {path: p.csv}  # the log\n",
            "  points: {append: [F], path: p.csv}",
        ),
        ("  points:\n    path: p.csv\n    append: []\n", "    append: [F]"),
        ("  points:\n    path: p.csv\n    append: [a.csv]  # keep\n", "[a.csv, F]"),
        (
            "  points:\n    path: p.csv\n    append:\n    - a.csv\n",
            "    - a.csv\n    - F",
        ),
    ],
)
def test_flow_and_block_layouts(given: str, expected: str) -> None:
    head = "version: 1\nproject: {name: p, task: classification, target: y}\n"
    tail = "pipeline:\n  ingest: {uses: ingest, with: {source: points}}\n"
    text = head + "data:\n" + given + tail
    edited = retrain.add_append(text, "points", "F")
    assert expected in edited, edited
    assert specs.parse(edited).data["points"]["append"][-1] == "F"
    if "#" in given:
        assert "#" in edited


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(RunError, match="no data source 'nope'"):
        retrain.add_append(EXAMPLE, "nope", FILE)


def test_a_path_outside_the_repository_makes_the_edit_invalid() -> None:
    with pytest.raises(RunError, match=r"would make mlops\.yaml invalid"):
        retrain.add_append(EXAMPLE, "breast-cancer", "/tmp/rows.csv")


def test_the_appended_file_reaches_params_and_ingest_deps() -> None:
    files = compiler.render(specs.parse(_append(EXAMPLE)))
    params = yaml.safe_load(files["params.yaml"])
    assert params["data"]["breast-cancer"]["append"] == [FILE]
    ingest_stage = yaml.safe_load(files["dvc.yaml"])["stages"]["ingest"]
    assert FILE in ingest_stage["deps"]
    assert "data.breast-cancer" in str(ingest_stage["params"])


# -- ingest's append -----------------------------------------------------------


def test_ingest_appends_rows_in_the_sources_columns_and_types() -> None:
    source = pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})
    more = pd.DataFrame({"target": [1], "a": [3.5], "extra": ["x"]})
    both = ingest.append_rows(source, [("more.csv", more)])
    assert both.to_dict("list") == {"a": [1.0, 2.0, 3.5], "target": [0, 1, 1]}
    assert both.dtypes.to_dict() == source.dtypes.to_dict()
    assert ingest.append_rows(source, []) is source
    with pytest.raises(common.StageError, match="lacks the source's columns 'a'"):
        ingest.append_rows(source, [("bad.csv", more.drop(columns="a"))])


def test_the_ingest_stage_reads_the_appended_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": [1, 2], "target": [0, 1]}).to_csv("src.csv", index=False)
    Path("data/retrain").mkdir(parents=True)
    pd.DataFrame({"a": [3], "target": [1]}).to_csv("data/retrain/r.csv", index=False)
    params = {"data": {"s": {"path": "src.csv", "append": ["data/retrain/r.csv"]}}}
    stage = {"with": {"source": "s"}, "outputs": {"data": "out/data.parquet"}}
    assert ingest._run(params, "ingest", stage) == 0
    assert pd.read_parquet("out/data.parquet")["a"].tolist() == [1, 2, 3]
    params["data"]["s"]["append"] = ["data/retrain/missing.csv"]
    with pytest.raises(common.StageError, match=r"missing\.csv not found"):
        ingest._run(params, "ingest", stage)


# -- the labelled rows ---------------------------------------------------------


def _batch() -> cur_mod.Batch:
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4]})
    keys = pd.DataFrame({"request_id": ["r0", "r0", "r1", "r2"], "row": [0, 1, 0, 0]})
    return cur_mod.Batch(source="log", frame=frame, keys=keys)


def test_logged_rows_are_joined_with_their_labels_and_unlabelled_ones_dropped() -> None:
    labels = pd.DataFrame(
        {"request_id": ["r0", "r0", "r2", "r9"], "row": [0, 1, 0, 0], "y": [1, 0, 1, 1]}
    )
    rows = rows_mod.labelled(_batch(), "y", labels)
    assert rows.to_dict("list") == {"x": [0.1, 0.2, 0.4], "y": [1, 0, 1]}


def test_a_batch_with_the_target_is_labelled_already_and_none_is_refused() -> None:
    batch = cur_mod.Batch(source="f", frame=pd.DataFrame({"x": [1, 2], "y": [0, None]}))
    assert rows_mod.labelled(batch, "y", None)["x"].tolist() == [1]
    with pytest.raises(common.StageError, match="nothing to retrain on"):
        rows_mod.labelled(_batch(), "y", None)


# -- the pull request's text -----------------------------------------------------


def test_the_body_links_the_runs_drift_report_and_holds_the_summary() -> None:
    text = retrain.body(
        "## mlops monitor: drift\n", source="s", data_file=FILE, rows=7, env=ENV
    )
    assert "https://github.com/octo/cancer-classifier/actions/runs/42" in text
    assert "`mlops-monitor`" in text and "7 labelled rows" in text
    assert text.rstrip().endswith("## mlops monitor: drift")
    assert retrain.run_url({}) is None
    assert ".mlops/monitor/report.html" in retrain.body(
        "", source="s", data_file=FILE, rows=0, env={}
    )


# -- the command, in a git repository ---------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "mlops.yaml", root / "mlops.yaml")
    shutil.copytree(ROOT / "schema", root / "schema")
    specs_file = root / "mlops.yaml"
    compiler.compile_to(specs.load(specs_file), root)
    run(["git", "init", "-q", "-b", "main"], cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
        cwd=root)  # fmt: skip
    monitor = root / "mlops-monitor"
    monitor.mkdir()
    (monitor / "monitor.json").write_text(json.dumps({"verdict": "drift"}))
    (monitor / "summary.md").write_text("## mlops monitor: drift\n")
    return root


def _retrain(root: Path, rows: pd.DataFrame, **kw: str) -> retrain.Outcome:
    def write(dest: Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(dest, index=False)
        return 0

    return retrain.run(
        root, root / "mlops.yaml", write, date="2026-12-01",
        monitor_dir=root / "mlops-monitor", source=None, branch=kw.get("branch"),
        env=ENV, say=lambda _: None,
    )  # fmt: skip


def _log(root: Path) -> list[str]:
    return run(["git", "log", "--format=%s"], cwd=root).stdout.splitlines()


def test_retrain_commits_the_rows_the_spec_and_the_params_once_a_day(
    repo: Path,
) -> None:
    rows = pd.DataFrame({"mean radius": [30.0], "target": [1]})
    done = _retrain(repo, rows)
    assert done == retrain.Outcome("mlops/retrain-2026-12-01", FILE, True)
    assert _log(repo)[0] == f"Retrain on drifted data: {FILE}"
    changed = run(["git", "show", "--name-only", "--format="], cwd=repo).stdout.split()
    assert sorted(changed) == [FILE, "dvc.yaml", "mlops.yaml", "params.yaml"]
    assert (
        "# The example has no production traffic" in (repo / "mlops.yaml").read_text()
    )
    compiled = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    assert compiled.stdout == ""
    state = repo / retrain.STATE_DIR
    assert (state / "branch").read_text() == "mlops/retrain-2026-12-01\n"
    assert "actions/runs/42" in (state / "body.md").read_text()
    # The same day again, the same rows: nothing new, no second commit.
    assert not _retrain(repo, rows).committed
    assert len(_log(repo)) == 2
    # An open retraining PR's branch is kept.
    again = _retrain(repo, pd.DataFrame({"mean radius": [31.0], "target": [0]}),
                     branch="mlops/retrain-2026-11-24")  # fmt: skip
    assert again.committed and again.branch == "mlops/retrain-2026-11-24"
    assert specs.load(repo / "mlops.yaml").data["breast-cancer"]["append"] == [FILE]


def test_retrain_refuses_without_drift_or_with_a_strange_branch(repo: Path) -> None:
    rows = pd.DataFrame({"target": [1]})
    with pytest.raises(RunError, match="not an mlops/retrain"):
        _retrain(repo, rows, branch="main")
    with pytest.raises(RunError, match="not a date"):
        retrain.run(
            repo, repo / "mlops.yaml", lambda _: 0, date="../x",
            monitor_dir=repo / "mlops-monitor", source=None, branch=None,
            env={}, say=lambda _: None,
        )  # fmt: skip
    (repo / "mlops-monitor" / "monitor.json").write_text('{"verdict": "no drift"}')
    with pytest.raises(RunError, match="says 'no drift': nothing to retrain"):
        _retrain(repo, rows)


def test_the_command_reaches_the_check_through_the_cli(repo: Path) -> None:
    # Through `mlops retrain` itself, flags and all, as the workflow calls it.
    (repo / "mlops-monitor" / "monitor.json").write_text('{"verdict": "no drift"}')
    for extra in ([], ["--log", (repo / "shipped").as_uri()]):
        proc = mlops("retrain", "--monitor", "mlops-monitor", *extra, cwd=repo,
                     check=False)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "says 'no drift': nothing to retrain" in proc.stderr
