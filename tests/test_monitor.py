"""`mlops monitor`: the drift core on generated frames, the prediction-log
reader, the outputs, and the real CLI against a real registry and DVC remote.

The end-to-end module fixture trains the tiny spec in ``tests/monitor/``,
pushes the run to the DVC remote, gives version 1 ``@production``, then moves
the checkout's data on and empties the local DVC cache: the reference must
still be version 1's train split, fetched from the remote.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from stages import common
from stages.monitor import (
    DRIFT,
    EXIT_CODES,
    NO_DRIFT,
    UNCHECKED,
    drift,
    labels,
    outputs,
)
from stages.monitor import current as cur
from tests.support import ROOT, dvc, mlops, quiet_env, run

SPEC = ROOT / "tests" / "monitor" / "mlops.yaml"
COLOURS = ["red", "green", "blue"]
LIMITS = drift.Thresholds(default=0.2, min_rows=50)


def points(
    n: int,
    seed: int,
    *,
    shift: float = 0.0,
    shares: tuple[float, ...] = (0.5, 0.3, 0.2),
) -> pd.DataFrame:
    """Two normal features, a colour, uniform noise and a label that depends on
    them; ``shift`` moves ``x``, ``shares`` the colours."""
    rng = np.random.default_rng(seed)
    x, size = rng.normal(shift, 1, n), rng.normal(0, 1, n)
    colour = rng.choice(COLOURS, n, p=list(shares))
    return pd.DataFrame({
        "x": x.round(4), "size": size.round(4), "colour": colour,
        "noise": rng.uniform(0, 1, n).round(4),
        "label": (x + size + (colour == "red") > 0.5).astype(int),
    })  # fmt: skip


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["label"])


def with_ids(frame: pd.DataFrame, first: int) -> pd.DataFrame:
    """``frame`` with a customer number in front: new customers have new ones,
    so this column always drifts, and the spec drops it."""
    return pd.concat(
        [pd.DataFrame({"id": np.arange(first, first + len(frame))}), frame], axis=1
    )


# --- the scoring core ---


def test_ks_statistic_is_scipys_on_ties_and_unequal_sizes() -> None:
    from scipy import stats  # 0.5 s: imported by the tests that compare with it

    rng = np.random.default_rng(3)
    for n, m in ((400, 5000), (30, 7), (1000, 1000)):
        a, b = rng.normal(0, 1, n).round(1), rng.normal(0.2, 1, m).round(1)
        assert drift.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_a_numeric_columns_score_is_scipys_ks_without_its_nulls() -> None:
    from scipy import stats

    # score_column finds the nulls itself (one isnan, no copy without any):
    # the statistic must still be scipy's on the non-null values, ties and all.
    rng = np.random.default_rng(11)
    for n, m, nulls in ((3000, 20000, 0.1), (5000, 800, 0.0), (400, 400, 0.5)):
        a, b = rng.normal(0, 1, n).round(2), rng.normal(0.1, 1.2, m).round(1)
        a[rng.random(n) < nulls], b[rng.random(m) < nulls / 2] = np.nan, np.nan
        for ref, new in ((a, b), (b, a), (a.astype(np.float32), b)):
            s = drift.score_column("x", pd.Series(ref), pd.Series(new), 0.2, 10)
            want = stats.ks_2samp(ref[~np.isnan(ref)], new[~np.isnan(new)])
            assert s.score == pytest.approx(want.statistic, abs=1e-12, rel=0)
            assert s.reference_count == int((~np.isnan(ref)).sum())
            assert s.current_null_share == pytest.approx(np.isnan(new).mean())
    whole = pd.Series(rng.integers(0, 9, 500))
    nullable = pd.Series(pd.array([1, None, 3] * 100, dtype="Int64"))
    s = drift.score_column("n", whole, nullable, 0.2, 10)
    assert s.current_count == 200 and s.current_null_share == pytest.approx(1 / 3)
    want = stats.ks_2samp(whole.to_numpy(float), [1.0, 3.0] * 100).statistic
    assert s.score == pytest.approx(want, abs=1e-12, rel=0)
    empty = drift.score_column("n", pd.Series(dtype=float), whole, 0.2, 10)
    assert empty.reason == "no non-null values in the reference data"
    assert empty.reference_null_share == 0.0


def test_categories_score_the_same_as_text_category_or_mixed_values() -> None:
    rng = np.random.default_rng(12)
    ref = pd.Series(rng.choice(["a", "b", "c", None], 4000, p=[0.5, 0.2, 0.2, 0.1]))
    cur = pd.Series(rng.choice(["a", "b", "c", None], 9000, p=[0.3, 0.3, 0.3, 0.1]))
    text = drift.score_column("c", ref, cur, 0.2, 10)
    assert text.current_count == cur.notna().sum()
    assert text.current_null_share == pytest.approx(cur.isna().mean())
    # Unused levels of a pandas category are not categories of the data.
    as_category = cur.astype(pd.CategoricalDtype(["a", "b", "c", "unused"]))
    for other in (as_category, cur.map({"a": "a", "b": "b", "c": "c"})):
        again = drift.score_column("c", ref, other, 0.2, 10)
        assert again.score == pytest.approx(text.score, abs=1e-12, rel=0)
    # Numbers on one side, text on the other: compared as text, 1 meets "1".
    numbers = pd.Series([1, 2, 2, 2] * 100)
    texts = pd.Series(["1", "2", "1", None] * 50, dtype=object)
    s = drift.score_column("k", numbers, texts, 0.2, 10, kind=drift.CATEGORICAL)
    want = drift.cramers_v(numbers.astype(str), texts.dropna())
    assert s.score == pytest.approx(want, abs=1e-12, rel=0) and want > 0.1


def test_cramers_v_is_zero_for_the_same_shares_and_near_one_when_disjoint() -> None:
    same = pd.Series(["a", "b"] * 500)
    assert drift.cramers_v(same, same.iloc[::-1]) == 0.0
    other = pd.Series(["c", "d"] * 500)
    assert drift.cramers_v(same, other) > 0.99


def test_a_batch_from_the_same_distribution_has_no_drift() -> None:
    problems, scores = drift.check_features(
        features(points(2000, 1)), features(points(3000, 2)), LIMITS
    )
    assert problems == [] and len(scores) == 4
    assert {s.method for s in scores} == {drift.KS, drift.CRAMERS_V}
    assert drift.verdict(problems, scores).verdict == NO_DRIFT
    assert all(s.score is not None and s.score < 0.1 for s in scores)


def test_drift_on_exactly_the_shifted_feature_and_the_changed_category() -> None:
    shifted = points(3000, 2, shift=0.8, shares=(0.15, 0.5, 0.35))
    problems, scores = drift.check_features(
        features(points(2000, 1)), features(shifted), LIMITS
    )
    by_name = {s.name: s for s in scores}
    assert {s.name for s in scores if s.drifted} == {"x", "colour"}
    assert (
        by_name["x"].method == drift.KS and by_name["colour"].method == drift.CRAMERS_V
    )
    judged = drift.verdict(problems, scores)
    assert judged.verdict == DRIFT and len(judged.reasons) == 2


def test_a_per_feature_threshold_overrides_the_default() -> None:
    limits = drift.Thresholds(default=0.2, min_rows=50, features={"x": 0.9})
    shifted = features(points(3000, 2, shift=0.8))
    _, scores = drift.check_features(features(points(2000, 1)), shifted, limits)
    x = next(s for s in scores if s.name == "x")
    assert x.threshold == 0.9 and not x.drifted


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        (pd.DataFrame(), "the current data is empty"),
        (features(points(20, 4)), "20 rows, fewer than monitoring.min_rows (50)"),
        (features(points(200, 4)).drop(columns=["size"]), "missing 'size'"),
        (features(points(200, 4)).assign(x="big"), "'x' (float64 -> object)"),
        (
            features(points(200, 4)).map(lambda _: None),
            "every value of the current data's feature columns is null",
        ),
    ],
    ids=["empty", "too-small", "column-gone", "type-changed", "all-null"],
)
def test_unusable_batches_could_not_be_checked(
    batch: pd.DataFrame, reason: str
) -> None:
    problems, scores = drift.check_features(features(points(500, 1)), batch, LIMITS)
    judged = drift.verdict(problems, scores)
    assert judged.verdict == UNCHECKED and scores == []
    assert reason in judged.reasons[0]


def test_one_unscorable_feature_is_never_read_as_no_drift() -> None:
    batch = features(points(500, 2)).assign(noise=np.nan)
    problems, scores = drift.check_features(features(points(500, 1)), batch, LIMITS)
    judged = drift.verdict(problems, scores)
    assert judged.verdict == UNCHECKED
    assert judged.reasons == ("noise: no non-null values in the current data",)
    batch["x"] += 2
    _, scores = drift.check_features(features(points(500, 1)), batch, LIMITS)
    assert drift.verdict([], scores).verdict == DRIFT


# --- the prediction log ---


def _line(i: int, rows: list[dict[str, object]], version: str = "1") -> str:
    return json.dumps({
        "request_id": f"r{i}", "time": f"2026-12-01T10:{i % 60:02d}:00+00:00",
        "model": "tiny", "model_version": version, "predictor": "onnx",
        "inputs": rows, "outputs": [int(r["x"] > 0) for r in rows],  # type: ignore[operator]
    })  # fmt: skip


def write_log(folder: Path, frame: pd.DataFrame, *, bad: bool = True) -> None:
    """The frame as a rotated log of two servers: requests of 1 and 2 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = features(frame).to_dict("records")
    half = len(rows) // 2
    first = [_line(i, rows[i : i + 2]) for i in range(0, half, 2)]
    second = [_line(i, [rows[i]]) for i in range(half, len(rows))]
    (folder / "predictions-a-1.jsonl.1").write_text("\n".join(first) + "\n")
    extra = ['{"request_id": "cut", "inputs": [', "[1, 2]", '{"inputs": [{}]}'] * bad
    (folder / "predictions-a-1.jsonl").write_text("\n".join(second[:10] + extra) + "\n")
    (folder / "predictions-b-2.jsonl").write_text("\n".join(second[10:]) + "\n")
    (folder / "notes.txt").write_text("not a log file\n")


def test_the_log_reader_reads_rotated_files_and_counts_bad_lines(
    tmp_path: Path,
) -> None:
    frame = points(300, 5)
    write_log(tmp_path, frame)
    batch = cur.read_log(tmp_path)
    assert batch.files == [
        "predictions-a-1.jsonl", "predictions-a-1.jsonl.1", "predictions-b-2.jsonl"
    ]  # fmt: skip
    assert len(batch.frame) == 300 and batch.bad_lines == 3
    assert batch.bad_examples[0].startswith("predictions-a-1.jsonl:11: not JSON")
    assert "'outputs' is not a list" in batch.bad_examples[2]
    pd.testing.assert_frame_equal(
        batch.frame.sort_values("x").reset_index(drop=True),
        features(frame).sort_values("x").reset_index(drop=True),
    )
    assert batch.predictions is not None and batch.keys is not None
    r0 = batch.keys[batch.keys["request_id"] == "r0"]
    assert r0["row"].tolist() == [0, 1]
    assert batch.first_time == "2026-12-01T10:00:00+00:00"


def test_since_keeps_only_recent_entries(tmp_path: Path) -> None:
    write_log(tmp_path, points(300, 5), bad=False)
    since = cur.since_time("2026-12-01T10:50:00", datetime.now(UTC))
    batch = cur.read_log(tmp_path, since)
    assert batch.first_time == "2026-12-01T10:50:00+00:00"
    assert 0 < len(batch.frame) < 300
    week = cur.since_time("7d", datetime(2026, 12, 8, 10, 0, tzinfo=UTC))
    assert week == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(common.StageError, match="neither a duration"):
        cur.since_time("last tuesday", datetime.now(UTC))


def test_a_missing_log_folder_is_an_empty_batch(tmp_path: Path) -> None:
    batch = cur.read_log(tmp_path / "nowhere")
    assert len(batch.frame) == 0 and batch.files == []
    problems, _ = drift.check_features(features(points(100, 1)), batch.frame, LIMITS)
    assert problems == ["the current data is empty"]


def test_a_log_shipped_to_an_object_store_reads_like_the_folder(
    tmp_path: Path,
) -> None:
    import fsspec

    folder = tmp_path / "log"
    write_log(folder, points(300, 5))
    local = cur.read_log(folder)
    store = fsspec.filesystem("memory")
    for path in folder.iterdir():
        store.pipe_file(f"/shipped/{path.name}", path.read_bytes())
    for url in ("memory://shipped", folder.as_uri()):
        batch = cur.read_log(url)
        assert batch.source == f"prediction log {url}"
        assert batch.files == local.files and batch.bad_lines == local.bad_lines
        pd.testing.assert_frame_equal(batch.frame, local.frame)
    assert len(cur.read_log("memory://nothing-shipped-yet").frame) == 0
    # A store that cannot be read is a failure, never an empty log.
    with pytest.raises(ValueError, match="nosuch"):
        cur.read_log("nosuch://bucket/log")


# --- labels and outputs ---


def test_labels_join_on_request_and_row_and_give_live_metrics() -> None:
    keys = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, 0]})
    predictions = pd.Series([1, 0, 1])
    truth = pd.DataFrame({"request_id": ["a", "b", "a"], "row": [1, 0, 0],
                          "label": [0, 0, 1]})  # fmt: skip
    joined = labels.join(keys, predictions, truth, "label")
    assert joined[["request_id", "row", "prediction", "label"]].values.tolist() == [
        ["a", 0, 1, 1], ["a", 1, 0, 0], ["b", 0, 1, 0]
    ]  # fmt: skip
    gates = [{"metric": "accuracy", "min": 0.9}]
    live = labels.live_metrics(common.CLASSIFICATION, joined, gates)
    assert live["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert live["gates"] == [{"metric": "accuracy", "rule": "min", "threshold": 0.9,
                              "value": pytest.approx(2 / 3), "passed": False}]  # fmt: skip


def test_metrics_file_has_a_gauge_per_feature_and_model_version(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _, scores = drift.check_features(
        features(points(500, 1)), features(points(500, 2, shift=1)), LIMITS
    )
    result = {
        "verdict": DRIFT, "reasons": [], "features": [s.to_dict() for s in scores],
        "reference": {"model": "tiny", "version": "3", "rows": 500},
        "current": {"rows": 500, "bad_lines": 2, "source": "x", "lines": 9,
                    "bad_line_examples": ["predictions-a.jsonl:3: not JSON"]},
    }  # fmt: skip
    text = outputs.write_metrics(tmp_path, result, 1.0e9).read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["mlops_drift_score"].samples
    assert {s.labels["feature"] for s in samples} == {"x", "size", "colour", "noise"}
    assert {s.labels["model_version"] for s in samples} == {"3"}
    x = next(s for s in samples if s.labels["feature"] == "x")
    assert x.value == pytest.approx(scores[0].score)
    [bad] = families["mlops_monitor_bad_log_lines"].samples
    assert bad.value == 2
    assert "| x | kolmogorov-smirnov |" in outputs.markdown(result)


# --- the real CLI, registry and DVC remote ---


def _md5(path: Path) -> str:
    return common.file_md5(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Version 1 trained, pushed and @production; then the checkout moved on."""
    root = tmp_path_factory.mktemp("monitor") / "repo"
    (root / "data").mkdir(parents=True)
    shutil.copytree(ROOT / "stages", root / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(SPEC, root / "mlops.yaml")
    with_ids(points(600, 1), 0).to_csv(root / "data" / "points.csv", index=False)
    run(["git", "init", "-q"], cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "tiny"], cwd=root)
    mlops("run", cwd=root)
    mlops("push", cwd=root)
    split = root / "artifacts" / "preprocess" / "train.parquet"
    first = _md5(split)
    points(400, 2).to_csv(root / "same.csv", index=False)
    unpromoted = _monitor(root, "--current", "same.csv", "--no-report")
    # What `mlops promote` ends with (tested in test_promote.py): the alias moves.
    probe = ("import mlflow; c = mlflow.MlflowClient('sqlite:///.mlops/mlflow.db'); "
             "c.set_registered_model_alias('tiny', 'production', '1')")  # fmt: skip
    run([sys.executable, "-c", probe], cwd=root)
    # The data moves on: a new split in the working tree and dvc.lock, and the
    # old one only in the remote.
    moved = with_ids(points(900, 9, shift=3.0), 600)
    moved.to_csv(root / "data" / "points.csv", index=False)
    dvc("repro", "preprocess", cwd=root)
    shutil.rmtree(root / ".dvc" / "cache")
    assert _md5(split) != first
    yield {"root": root, "first_md5": first, "unpromoted": unpromoted}


def _monitor(root: Path, *args: str) -> tuple[int, dict[str, object]]:
    out = root / ".mlops" / "monitor"
    if out.exists():
        shutil.rmtree(out)
    proc = mlops("monitor", *args, cwd=root, check=False)
    assert proc.returncode != 1, proc.stderr
    return proc.returncode, json.loads((out / outputs.RESULT_FILE).read_text())


def test_the_reference_is_the_production_versions_split_from_the_remote(
    trained: dict[str, object],
) -> None:
    root = Path(str(trained["root"]))
    # The prediction log of version 1's server, from version 1's distribution,
    # and the true labels of its rows (requests r0, r2, ... of two rows first).
    logged = points(400, 2)
    write_log(root / ".mlops" / "predictions", logged)
    ids = [f"r{i - i % 2}" if i < 200 else f"r{i}" for i in range(400)]
    rows = [i % 2 if i < 200 else 0 for i in range(400)]
    answers = pd.DataFrame({"request_id": ids, "row": rows, "label": logged["label"]})
    answers.to_csv(root / "data" / "answers.csv", index=False)
    code, result = _monitor(root, "--no-report")
    ref = result["reference"]
    assert isinstance(ref, dict)
    assert ref["data_md5"] == trained["first_md5"] and ref["version"] == "1"
    assert "DVC remote" in str(ref["source"]) and ref["rows"] == 450
    # Against the checkout's newer split (x moved by 3) this batch would drift.
    assert (code, result["verdict"]) == (EXIT_CODES[NO_DRIFT], NO_DRIFT)
    assert result["current"]["rows"] == 400 and result["current"]["bad_lines"] == 3  # type: ignore[index]
    assert result["prediction"]["score"] is not None  # type: ignore[index]
    assert "does not read: weight" in str(result["notes"])
    live, label = result["live"], result["label"]
    assert live["rows"] == 400 and label["score"] < 0.2  # type: ignore[index]
    truth = logged["x"].gt(0).astype(int).eq(logged["label"]).mean()
    assert live["metrics"]["accuracy"] == pytest.approx(truth)  # type: ignore[index]
    noise = next(f for f in result["features"] if f["name"] == "noise")  # type: ignore[attr-defined, index]
    assert noise["threshold"] == 0.5
    assert not (root / ".mlops" / "monitor" / outputs.REPORT_FILE).exists()


def test_exit_codes_and_outputs_through_the_cli(
    trained: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, result = trained["unpromoted"]  # type: ignore[misc]
    assert (code, result["verdict"]) == (EXIT_CODES[UNCHECKED], UNCHECKED)
    assert "no version of tiny holds @production" in str(result["reasons"])

    root = Path(str(trained["root"]))
    shifted = features(points(400, 3, shift=1.0, shares=(0.1, 0.6, 0.3)))
    with_ids(shifted, 10_000).to_csv(root / "shifted.csv", index=False)
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv(outputs.SUMMARY_ENV, str(summary))
    code, result = _monitor(root, "--current", "shifted.csv")
    assert (code, result["verdict"]) == (EXIT_CODES[DRIFT], DRIFT)
    drifted = {f["name"] for f in result["features"] if f["drifted"]}  # type: ignore[attr-defined, index]
    assert drifted == {"x", "colour"}
    # The identifier preprocess drops is not the model's input: not scored.
    assert "id" not in {f["name"] for f in result["features"]}  # type: ignore[attr-defined, index]
    out = root / ".mlops" / "monitor"
    page = (out / outputs.REPORT_FILE).read_text()
    assert "Feature Drift" in page
    # plotly.js (4.8 MB) is in the page once, and every figure loads it through
    # requirejs; a plotly that drops that mode embeds one copy per figure.
    assert page.count("* plotly.js v") == 1
    assert page.count('require(["plotly"], function(Plotly)') >= 2
    assert 'feature="x"' in (out / outputs.METRICS_FILE).read_text()
    assert summary.read_text().startswith("## mlops monitor: drift")

    # The prediction log read from a URL, as from a store the logs shipped to.
    write_log(root / "shipped", points(400, 3, shift=1.0, shares=(0.1, 0.6, 0.3)))
    url = (root / "shipped").as_uri()
    code, result = _monitor(root, "--log", url, "--no-report")
    assert (code, result["verdict"]) == (EXIT_CODES[DRIFT], DRIFT)
    assert result["current"]["source"] == f"prediction log {url}"  # type: ignore[index]

    missing = mlops("monitor", "--current", "nope.csv", cwd=root, check=False)
    assert missing.returncode == 1 and "nope.csv: no such file" in missing.stderr


def _cron_pod(origin: Path, store: Path, pods: Path) -> tuple[Path, dict[str, Any]]:
    """The CronWorkflow's monitor script of ``origin``'s committed spec, run as
    its pod would: an empty workspace, the manifest's environment, the
    repository cloned at a commit, the DVC remote and MLflow reached only
    through their settings (a cluster gives them as a URL and a secret; here,
    ``store``'s remote folder and SQLite file). Its clone and monitor.json."""
    import yaml

    from runner import compile as compiler
    from runner import spec as specs
    from runner.targets import argo

    rendered = compiler.render(specs.load(origin / "mlops.yaml"))
    cron = yaml.safe_load(rendered[argo.CRON_FILE])
    [template] = cron["spec"]["workflowSpec"]["templates"]
    container = template["container"]
    assert container["command"] == ["sh", "-c"]
    assert container["resources"]["limits"]  # bounded like every other template
    script = container["args"][0]
    assert f"cd {argo.WORKSPACE}\n" in script
    assert script.rstrip().endswith("mlops monitor")
    workspace = pods / "pod"
    workspace.mkdir(parents=True)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["MLOPS_REVISION"] == "HEAD"
    env.update({
        "MLOPS_REPO": str(origin),  # {{workflow.parameters.repo}}, as submitted
        "MLOPS_DVC_REMOTE_URL": str(store / ".mlops" / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / '.mlops' / 'mlflow.db'}",
        "HOME": str(workspace),
    })  # fmt: skip
    proc = subprocess.run(
        ["sh", "-c", script.replace(f"cd {argo.WORKSPACE}\n", f"cd {workspace}\n")],
        cwd=workspace, env={**quiet_env(), **env}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == EXIT_CODES[NO_DRIFT], proc.stdout + proc.stderr
    clone = workspace / "repo"
    result = json.loads(
        (clone / ".mlops" / "monitor" / outputs.RESULT_FILE).read_text()
    )
    assert result["verdict"] == NO_DRIFT
    # The reference came from the remote: this pod never ran the pipeline.
    assert not (clone / "artifacts" / "preprocess").exists()
    assert "DVC remote" in str(result["reference"]["source"])
    return clone, result


def _commit_compiled(repo: Path, message: str) -> None:
    """What a team commits after its first run: the spec, the files compiled
    from it and DVC's own configuration."""
    mlops("compile", cwd=repo)
    names = ["mlops.yaml", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore"]
    run(["git", "add", *[n for n in names if (repo / n).exists()]], cwd=repo)
    run(["git", "commit", "-qm", message], cwd=repo)


def test_the_cron_workflows_pod_checks_the_committed_data_from_a_clean_clone(
    trained: dict[str, object], tmp_path: Path
) -> None:
    root = Path(str(trained["root"]))
    origin = tmp_path / "origin"
    run(["git", "clone", "-q", str(root), str(origin)], cwd=tmp_path)
    spec = origin / "mlops.yaml"
    spec.write_text(
        spec.read_text().replace("monitoring:\n", "monitoring:\n  current: points\n")
    )
    dvc_dir = origin / ".dvc"
    dvc_dir.mkdir(exist_ok=True)
    shutil.copy(root / ".dvc" / "config", dvc_dir / "config")
    _commit_compiled(origin, "the weekly check reads the committed data")
    _, result = _cron_pod(origin, root, tmp_path)
    assert result["current"]["source"] == "data source 'points'"
    ref = result["reference"]
    assert ref["data_md5"] == trained["first_md5"] and ref["version"] == "1"


def test_the_examples_cron_workflow_succeeds_on_its_production_model(
    example_run: Any, tmp_path: Path
) -> None:
    """The bundled example's own CronWorkflow, as committed: its run pushed to
    the remote, version 1 promoted, and the weekly pod finding no drift."""
    import mlflow

    root = example_run.copy(tmp_path / "repo")
    mlops("push", cwd=root)
    client = mlflow.MlflowClient(f"sqlite:///{root / '.mlops' / 'mlflow.db'}")
    client.set_registered_model_alias("cancer-classifier", "production", "1")
    _commit_compiled(root, "the example, run and pushed")
    clone, result = _cron_pod(root, root, tmp_path)
    assert result["current"]["source"] == "data source 'breast-cancer'"
    assert result["reference"]["version"] == "1"
    assert result["features"] and not any(f["drifted"] for f in result["features"])
    assert (clone / ".mlops" / "monitor" / outputs.REPORT_FILE).exists()


def test_the_fast_and_the_line_reader_give_the_same_rows(tmp_path: Path) -> None:
    from stages.monitor import logread

    write_log(tmp_path, points(300, 5), bad=False)
    path = tmp_path / "predictions-a-1.jsonl.1"
    since = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    fast, slow = logread._read_arrow(path, since), logread._read_lines(path, since)
    assert fast is not None and 0 < len(fast.frame) < 150
    pd.testing.assert_frame_equal(fast.frame, slow.frame)
    assert fast.predictions.tolist() == slow.predictions.tolist()
    assert fast.request_ids.tolist() == slow.request_ids.tolist()
    assert fast.rows.tolist() == slow.rows.tolist()
    assert (fast.first, fast.last, fast.lines) == (slow.first, slow.last, slow.lines)
    (tmp_path / "cut.jsonl").write_bytes(path.read_bytes() + b'{"inputs": [')
    assert logread._read_arrow(tmp_path / "cut.jsonl", None) is None


def test_types_inferred_from_the_first_lines_still_read_every_later_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stages.monitor import logread

    # Whole numbers first, fractions and a missing value later: the sampled
    # schema widens them, so the fast reader keeps every row, as the slow one.
    rows = [{"x": i, "colour": "red"} for i in range(50)]
    rows += [{"x": i + 0.5, "colour": None} for i in range(50)]
    path = tmp_path / "predictions-a-1.jsonl"
    path.write_text("".join(_line(i, [r]) + "\n" for i, r in enumerate(rows)))
    monkeypatch.setattr(logread, "SAMPLE_BYTES", 2000)
    head = logread._sampled_schema(path, pa.schema([("time", pa.string())]))
    assert head.field("inputs").type.value_type.field("x").type == pa.float64()
    fast, slow = logread._read_arrow(path, None), logread._read_lines(path, None)
    assert fast is not None and len(fast.frame) == 100
    pd.testing.assert_frame_equal(fast.frame, slow.frame)
    # A later line the sample's types cannot hold sends the file to the line
    # reader, which keeps it: nothing is lost to the faster path.
    late = json.loads(_line(100, [{"x": 1, "colour": "red"}]))
    late["inputs"][0]["x"] = "many"
    path.write_text(path.read_text() + json.dumps(late) + "\n")
    assert logread._read_arrow(path, None) is None
    assert len(logread.read(path, None).frame) == 101


def test_outputs_typed_from_the_first_lines_or_inferred_when_they_are_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stages.monitor import logread

    monkeypatch.setattr(logread, "SAMPLE_BYTES", 2000)
    path = tmp_path / "predictions-a-1.jsonl"
    lines = [json.loads(_line(i, [{"x": 0.5 + i, "colour": "red"}])) for i in range(60)]
    for line in lines[:30]:  # the sample's outputs are null: they stay inferred
        line["outputs"] = [None]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sampled = logread._sampled_schema(path, pa.schema([("time", pa.string())]))
    assert "outputs" not in sampled.names
    fast = logread._read_arrow(path, None)
    assert fast is not None and fast.predictions.isna().sum() == 30
    assert fast.predictions[30:].eq(1).all()
    # Typed from the sample (whole numbers), a later text answer does not fit
    # the fast read: the line reader keeps every row and answer.
    lines[-1]["outputs"] = ["yes"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines[30:]))
    assert logread._read_arrow(path, None) is None
    assert logread.read(path, None).predictions.tolist() == [1] * 29 + ["yes"]


def test_a_source_under_data_is_read_with_ingests_readers(tmp_path: Path) -> None:
    frame = points(120, 6).assign(request_id=[f"r{i}" for i in range(120)])
    frame.to_parquet(tmp_path / "recent.parquet")
    batch = cur.read_source("recent", {"path": str(tmp_path / "recent.parquet")})
    assert batch.source == "data source 'recent'" and len(batch.frame) == 120
    assert batch.keys is not None and batch.keys["row"].eq(0).all()
    with pytest.raises(common.StageError, match="not found"):
        cur.read_source("gone", {"path": str(tmp_path / "gone.csv")})


def test_the_reader_reads_what_the_servers_log_writes(tmp_path: Path) -> None:
    """stages.serving.predlog's own writer, rotating after about 4 KB."""
    from stages.serving.inputs import Column
    from stages.serving.predlog import PredictionLog

    frame = features(points(200, 8))
    columns = [Column("x", "double"), Column("size", "double"),
               Column("colour", "string"), Column("noise", "double")]  # fmt: skip
    log = PredictionLog(tmp_path, sample=1, max_bytes=4096, backups=50, seed=0,
                        columns=columns, model="tiny", version="1",
                        predictor="sklearn")  # fmt: skip
    frame.loc[3, "x"] = np.nan

    async def serve() -> None:  # the log batches its writes on the event loop
        for i in range(0, 200, 4):
            chunk = frame.iloc[i : i + 4]
            arrays = [chunk[c.name].to_numpy() for c in columns]
            log.write(f"r{i}", datetime.now(UTC), arrays, [0, 1, 0, 1])
        log.close()

    asyncio.run(serve())
    batch = cur.read_log(tmp_path)
    assert len(batch.files) > 2 and batch.bad_lines == 0
    order = ["noise", "size", "colour"]
    got = batch.frame.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, frame.sort_values(order).reset_index(drop=True))
    assert batch.predictions is not None and batch.predictions.sum() == 100


def test_labels_that_have_not_arrived_are_a_note_not_a_failure(tmp_path: Path) -> None:
    from stages.monitor import cli

    params = {"project": {"task": "classification", "target": "label"}}
    settings = {
        "labels": {"name": "answers", "source": {"path": str(tmp_path / "no.csv")}}
    }
    write_log(tmp_path, points(300, 5), bad=False)
    batch = cur.read_log(tmp_path)
    score, live = cli.label_check(
        params, settings, points(300, 1), batch, predictions=None, limits=LIMITS
    )
    assert score is None and live is not None and "not found" in live["problem"]
    result = {"verdict": NO_DRIFT, "reasons": [], "features": [], "live": live,
              "reference": {}, "current": {"rows": 300}}  # fmt: skip
    assert "Labels could not be used: data file" in outputs.markdown(result)


def test_a_failing_run_lookup_fails_the_run_not_reads_as_a_missing_hash() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from stages.monitor import reference

    class Client:
        def __init__(self, code: int) -> None:
            self.code = code

        def get_run(self, run_id: str) -> None:
            raise MlflowException(f"run {run_id}", error_code=self.code)

    assert reference._run_tag(Client(codes.RESOURCE_DOES_NOT_EXIST), "r1") is None
    with pytest.raises(
        common.StageError, match=r"failed get_run\('r1'\): INTERNAL_ERROR"
    ):
        reference._run_tag(Client(codes.INTERNAL_ERROR), "r1")


def test_a_registry_fault_loading_the_model_fails_the_run_not_the_prediction_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model the registry would not hand over is a failure (exit 1); a model
    that cannot predict on the data is "could not check" with the reason."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from stages.monitor import cli
    from stages.monitor import reference as ref_mod

    ident = ref_mod.Identity("tiny", "1", "r1", "md5", None)
    frame = features(points(60, 1))
    batch = cur.Batch(frame=frame, source="test")

    def refused(params: object, ident: object) -> None:
        raise MlflowException("Permission denied", error_code=codes.PERMISSION_DENIED)

    monkeypatch.setattr(ref_mod, "load_model", refused)
    with pytest.raises(common.StageError, match=r"downloading models:/tiny/1"):
        cli.prediction_score({}, ident, frame, batch, LIMITS)

    class Broken:
        def predict(self, data: object) -> None:
            raise ValueError("columns do not match")

    monkeypatch.setattr(ref_mod, "load_model", lambda params, ident: Broken())
    score, _, both = cli.prediction_score({}, ident, frame, batch, LIMITS)
    assert score.score is None and both is None
    assert "could not predict: columns do not match" in str(score.reason)
    assert drift.verdict([], [score]).verdict == UNCHECKED


def test_a_flag_names_the_batch_over_the_spec_and_since_only_filters_the_log() -> None:
    import argparse

    from runner import release
    from runner.errors import RunError
    from runner.spec import load

    spec = load(ROOT / "mlops.yaml")  # monitoring.current names the data set
    named = spec.monitoring["current"]

    def settings(**flags: object) -> dict[str, Any]:
        given = {"output": "out", "current": None, "since": None, "log": None,
                 "no_report": False, **flags}  # fmt: skip
        argv = release.monitor_args(argparse.Namespace(**given), spec)
        return dict(json.loads(argv[argv.index("--settings") + 1]))

    assert settings()["current"]["name"] == named
    # --log is the log, whatever monitoring.current says, and --since filters it.
    by_log = settings(log="s3://logs/model", since="7d")
    assert by_log["current"] is None and by_log["log_dir"] == "s3://logs/model"
    assert settings(current="batch.csv")["current"] is None  # the file, not the source
    with pytest.raises(RunError, match="--current and --log name two"):
        settings(current="batch.csv", log="logs")
    with pytest.raises(RunError, match=f"monitoring.current '{named}', which is"):
        settings(since="7d")
    with pytest.raises(RunError, match="the batch is --current"):
        settings(current="batch.csv", since="7d")
    proc = mlops("monitor", "--since", "7d", cwd=ROOT, check=False)
    assert proc.returncode == 1 and "pass --log to check the log" in proc.stderr
