"""Unit tests of the stage cores on tiny DataFrames."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stages
from stages import common, evaluate, ingest, preprocess, train, validate
from tests.support import serve_folder

# --- common ---------------------------------------------------------------


def test_import_estimator_refuses_before_importing() -> None:
    with pytest.raises(common.StageError, match="not allowed"):
        common.import_estimator("os.system")
    with pytest.raises(common.StageError, match="not allowed"):
        common.import_estimator("sklearnx.Evil")
    cls = common.import_estimator("sklearn.linear_model.LinearRegression")
    assert cls.__name__ == "LinearRegression"
    with pytest.raises(common.StageError, match="cannot import"):
        common.import_estimator("sklearn.linear_model.Nope")


def test_import_estimator_allow_list() -> None:
    # Allowed modules get past the gate and are then checked for fit().
    with pytest.raises(common.StageError, match="not an estimator"):
        common.import_estimator("collections.OrderedDict", ["collections"])


def test_validate_and_the_stages_read_with_allow_by_the_same_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner import cli

    spec = Path(__file__).parents[1] / "invalid" / "estimator-not-allowed.yaml"
    text = spec.read_text()
    monkeypatch.chdir(tmp_path)
    cases = [
        ("sklearn.linear_model.Ridge", [], True),
        ("sklearnx.Evil", [], False),
        ("mypkg.models.Forest", ["mypkg"], True),
        ("mypkg.models.Forest", ["mypkg."], True),
        ("mypkgevil.Forest", ["mypkg"], False),  # a prefix is a module, not text
        ("mypkg.Forest", ["mypkg.Forest"], True),  # or the class itself
        ("mypkg.Forestry", ["mypkg.Forest"], False),
    ]
    for estimator, allow, allowed in cases:
        body = text.replace("estimator: subprocess.Popen", f"estimator: {estimator}")
        body = body.replace("params: {C: 1.0}", f"allow: {allow}")
        Path("mlops.yaml").write_text(body)
        code = cli.main(["validate"])
        err = capsys.readouterr().err
        assert (code == 0) == allowed, (estimator, allow, err)
        assert stages.in_modules(estimator, stages.allowed_prefixes(allow)) == allowed
        try:
            common.import_estimator(estimator, allow)
        except common.StageError as e:
            assert ("not allowed" in str(e)) != allowed, (estimator, allow, e)


def test_trusted_types_rejects_foreign_types() -> None:
    assert common.trusted_types(["numpy.dtype"], common.TRUSTED_MODULE_PREFIXES)
    with pytest.raises(common.StageError, match=r"os\.system"):
        common.trusted_types(["os.system"], common.TRUSTED_MODULE_PREFIXES)


def test_write_parquet_is_byte_identical(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None], "c": [0.5, np.nan]})
    common.write_parquet(df, tmp_path / "one.parquet")
    common.write_parquet(df.copy(), tmp_path / "two.parquet")
    one, two = (
        (tmp_path / "one.parquet").read_bytes(),
        (tmp_path / "two.parquet").read_bytes(),
    )
    assert one == two
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), df)


def test_compute_metrics_binary_and_regression() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    out = common.compute_metrics(
        "classification",
        ["accuracy", "recall", "roc_auc", "log_loss", "r2"],
        y,
        proba.argmax(1),
        proba=proba,
        classes=[0, 1],
    )
    assert out["accuracy"] == 0.75 and out["recall"] == 0.5 and out["roc_auc"] == 1.0
    assert "r2" not in out and out["log_loss"] > 0
    reg = common.compute_metrics("regression", ["mae", "rmse"], [1.0, 3.0], [2.0, 2.0])
    assert reg == {"mae": 1.0, "rmse": 1.0}


def test_stage_errors_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert ingest.main(["ingest"]) == 1
    assert "params.yaml not found" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text("stages: {other: {uses: ingest}}\n")
    assert ingest.main(["ingest"]) == 1
    assert "no stage 'ingest'" in capsys.readouterr().err


# --- ingest ---------------------------------------------------------------


def test_the_files_behind_a_model_and_their_uncommitted_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from tests.support import run

    monkeypatch.chdir(tmp_path)
    stages = {
        "ingest": {"deps": ["src/ingest.py", "data.csv"], "outs": ["out/data"]},
        "train": {
            "deps": ["out/data/part.parquet", "src/train.py"],
            "outs": ["out/model", {"out/run.json": {"cache": False}}],
            "metrics": [{"out/metrics.json": {"cache": False}}],
        },
        "report": {"deps": ["out/run.json", "src/report.py"], "outs": ["out/r"]},
    }
    Path("dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    behind = ["data.csv", "dvc.yaml", "params.yaml", "src/ingest.py", "src/train.py"]
    assert common.sources_of("out/run.json") == behind
    assert common.sources_of("out/model/MLmodel") == behind
    assert common.sources_of("elsewhere.json") is None
    for name in [*behind, "src/report.py", "README.md", "dvc.lock", ".dvc/config"]:
        if not Path(name).exists():  # dvc.yaml is
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            Path(name).write_text("one\n")
    run(["git", "init", "-q"], cwd=tmp_path)
    run(["git", "add", "-A"], cwd=tmp_path)
    run(["git", "commit", "-qm", "x"], cwd=tmp_path)
    assert common.git_changes("out/run.json") == []
    # Not behind the model: a downstream stage's code, a README, DVC's files.
    for name in ["src/report.py", "README.md", "dvc.lock", ".dvc/config"]:
        Path(name).write_text("two\n")
    Path("untracked.py").write_text("x\n")
    assert common.git_changes("out/run.json") == []
    Path("src/train.py").write_text("two\n")
    Path("data.csv").write_text("two\n")
    run(["git", "add", "data.csv"], cwd=tmp_path)  # staged counts too
    assert common.git_changes("out/run.json") == ["data.csv", "src/train.py"]
    # No stage writes it: every tracked change but DVC's own files.
    assert common.git_changes("elsewhere.json") == [
        "README.md", "data.csv", "src/report.py", "src/train.py",
    ]  # fmt: skip
    run(["git", "mv", "src/ingest.py", "src/load.py"], cwd=tmp_path)
    assert "src/load.py" in (common.git_changes("elsewhere.json") or [])
    assert common.name_changes([f"f{i}" for i in range(23)]).endswith("f19 and 3 more")


def test_ingest_local_formats(tmp_path: Path) -> None:
    df = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_json(tmp_path / "d.json", orient="records")
    df.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.json", "d.parquet"):
        got = ingest.load_source({"path": str(tmp_path / name)})
        pd.testing.assert_frame_equal(got, df, check_dtype=False)
    got = ingest.load_source({"path": str(tmp_path / "d.csv"), "format": "csv"})
    assert ingest.select_columns(got, ["y"]).columns.tolist() == ["y"]
    with pytest.raises(common.StageError, match="not in the source"):
        ingest.select_columns(got, ["zzz"])
    with pytest.raises(common.StageError, match="format"):
        ingest.detect_format("data.bin")


def test_ingest_sql(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x INTEGER, y TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    got = ingest.load_source(
        {"sql": {"url": f"sqlite:///{db}", "query": "SELECT * FROM t WHERE x > 1"}}
    )
    assert got["x"].tolist() == [2, 3]


def test_ingest_url_from_local_server(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1, 2], "y": [3, 4]}).to_csv(tmp_path / "d.csv", index=False)
    with serve_folder(tmp_path) as base:
        got = ingest.load_source({"url": f"{base}/d.csv"})
    assert got.to_dict("list") == {"x": [1, 2], "y": [3, 4]}


def test_ingest_sklearn_has_target() -> None:
    df = ingest.load_source({"sklearn": "iris"})
    assert "target" in df.columns and len(df) == 150
    with pytest.raises(common.StageError, match="unknown sklearn"):
        ingest.load_source({"sklearn": "nope"})


# --- validate -------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "n": [1.0, 5.5, 200.0, None],
        "c": ["a", "b", "z", "a"],
        "i": [1, 2, 2, 3],
    }
)


def _by_rule(results):
    return {(r["column"], r["name"]): r for r in results}


def test_column_rules_count_every_row() -> None:
    results = validate.check_rules(
        FRAME,
        {
            "n": {"min": 2, "max": 100, "max_null_share": 0.1, "type": "float"},
            "c": {"allowed": ["a", "b"], "unique": True, "severity": "warning"},
            "i": {"type": "integer", "unique": True},
            "gone": {},
        },
        {"min": 5},
    )
    r = _by_rule(results)
    assert r[("n", "min")]["detail"] == "1 value below min 2"
    assert r[("n", "max")]["detail"] == "1 value above max 100"
    assert not r[("n", "max_null_share")]["passed"]
    assert r[("n", "type")]["passed"]
    assert "'z'" in r[("c", "allowed")]["detail"]
    assert r[("c", "unique")]["severity"] == "warning"
    assert r[("i", "type")]["passed"] and not r[("i", "unique")]["passed"]
    assert not r[("gone", "exists")]["passed"]
    assert not r[(None, "rows.min")]["passed"]
    summary = validate.summarize(results)
    assert summary["passed"] is False
    assert summary["counts"]["failed_warnings"] == 2


def test_type_rules() -> None:
    assert not validate.check_column(FRAME["c"], {"type": "number"})[0]["passed"]
    assert validate.check_column(FRAME["c"], {"type": "string"})[0]["passed"]
    assert not validate.check_column(FRAME["n"], {"type": "integer"})[0]["passed"]


def test_warnings_only_pass() -> None:
    results = validate.check_rules(
        FRAME, {"n": {"max": 1, "severity": "warning"}}, None
    )
    assert validate.summarize(results)["passed"] is True


def test_deepchecks_suites(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": rng.choice(["x", "y"], 60),
            "target": rng.integers(0, 2, 60),
        }
    )
    report = tmp_path / "r.html"
    report.write_text("old")
    results = validate.run_suites(
        {"data_integrity": "warning", "train_test_validation": "error"},
        df,
        train=None,
        test=None,
        target="target",
        report=report,
    )
    skipped = [r for r in results if r["name"] == "train_test_validation"]
    assert skipped[0]["passed"] and "skipped" in skipped[0]["detail"]
    assert any(r["name"].startswith("data_integrity: ") for r in results)
    assert all(
        r["severity"] == "warning"
        for r in results
        if r["name"] != "train_test_validation"
    )
    assert report.read_text() != "old" and not list(tmp_path.glob("r (1).html"))
    with pytest.raises(common.StageError, match="unknown suite"):
        validate.run_suites(
            {"nope": "error"}, df, train=None, test=None, target="target", report=report
        )


def test_an_identifier_is_left_out_of_the_suites_so_duplicates_show(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"a": rng.normal(size=50), "b": rng.choice(["x", "y"], 50),
                         "target": rng.integers(0, 2, 50)})  # fmt: skip
    # Ten rows again, under new customer numbers: the same rows, twice.
    df = pd.concat([rows, rows.head(10)], ignore_index=True)
    df.insert(0, "customer", [f"C{i}" for i in range(len(df))])
    rules = {"customer": {"unique": True, "type": "string"}, "a": {"min": -9}}
    assert validate.identifiers(rules) == ["customer"]
    results = validate.run_suites(
        {"data_integrity": "error"}, df, train=None, test=None, target="target",
        report=tmp_path / "r.html", leave_out=validate.identifiers(rules),
    )  # fmt: skip
    [duplicates] = [r for r in results if "Duplicates" in r["name"]]
    assert duplicates["passed"] is False, duplicates  # with the id, 0 % found
    assert "customer" not in (tmp_path / "r.html").read_text()


def test_only_a_met_condition_is_a_pass() -> None:
    """deepchecks grades an unmet condition FAIL or WARN (17 % duplicated rows
    is a WARN), and ERROR when it could not evaluate it: none is a pass."""
    from types import SimpleNamespace as NS

    from stages import suites

    suites.load_deepchecks()
    from deepchecks.core.check_result import CheckFailure
    from deepchecks.tabular.checks import ConflictingLabels, DataDuplicates

    def check(header: str, *categories: str) -> NS:
        conds = [NS(category=NS(value=c), name=f"rule {c}", details="found 17%")
                 for c in categories]  # fmt: skip
        return NS(get_header=lambda: header, conditions_results=conds)

    result = NS(results=[
        check("met", "PASS", "PASS"), check("failed", "PASS", "FAIL", "WARN"),
        check("warned", "WARN"), check("errored", "ERROR"), check("bare"),
        CheckFailure(DataDuplicates(), ValueError("no index")),
        # Not for this task: left out, neither a pass nor a warning.
        CheckFailure(ConflictingLabels(),
                     ValueError("Check is irrelevant for regression tasks")),
    ])  # fmt: skip
    got = {
        r["name"].removeprefix("data_integrity: "): (r["passed"], r["severity"])
        for r in suites.suite_results("data_integrity", "error", result)
    }
    assert got == {
        "met": (True, "error"), "failed": (False, "error"),
        "warned": (False, "warning"), "errored": (False, "warning"),
        "bare": (True, "error"), "Data Duplicates": (False, "warning"),
    }  # fmt: skip
    # What is not a pass says which rule was not met, not the ones that were.
    [failed] = [
        r
        for r in suites.suite_results("s", "error", result)
        if r["name"] == "s: failed"
    ]
    assert failed["detail"] == "rule FAIL: found 17%"


# --- preprocess -----------------------------------------------------------


def test_stratified_and_time_splits() -> None:
    df = pd.DataFrame({"t": range(20), "x": range(20), "target": [0, 1] * 10})
    train_df, test_df = preprocess.split_data(
        df, "target", "classification", {"test_size": 0.2}, 0
    )
    assert len(test_df) == 4 and test_df["target"].sum() == 2
    again, _ = preprocess.split_data(
        df, "target", "classification", {"test_size": 0.2}, 0
    )
    assert train_df.index.tolist() == again.index.tolist()
    shuffled = df.sample(frac=1, random_state=1)
    tr, te = preprocess.split_data(
        shuffled,
        "target",
        "regression",
        {"method": "time", "time_column": "t", "test_size": 0.25},
        0,
    )
    assert te["t"].min() > tr["t"].max() and len(te) == 5
    with pytest.raises(common.StageError, match="time_column"):
        preprocess.split_data(df, "target", "regression", {"method": "time"}, 0)


def test_preprocessor_chooses_columns_by_dtype() -> None:
    df = pd.DataFrame(
        {
            "num": [1.0, np.nan, 3.0],
            "cat": ["a", None, "b"],
            "flag": [True, False, True],
            "keep": [1, 2, 3],
            "drop_me": [0, 0, 0],
            "target": [0, 1, 0],
        }
    )
    pre, groups = preprocess.build_preprocessor(
        df,
        "target",
        {
            "passthrough": ["keep"],
            "drop": ["drop_me"],
            "categorical": {"impute": "constant"},
        },
    )
    assert groups["numeric"] == ["num"] and groups["categorical"] == ["cat", "flag"]
    assert not hasattr(pre, "transformers_")  # saved unfitted
    out = pre.fit_transform(df.drop(columns="target"))
    assert not np.isnan(out).any()
    assert "categorical__cat_missing" in pre.get_feature_names_out()
    with pytest.raises(common.StageError, match="scale"):
        preprocess.build_preprocessor(df, "target", {"numeric": {"scale": "zscore"}})


# --- train ----------------------------------------------------------------


def test_resolve_params_and_fit() -> None:
    from sklearn.linear_model import LogisticRegression, Ridge

    got = common.resolve_params(LogisticRegression, {"C": 1.0}, {"C": 2.0}, 7)
    assert got == {"C": 2.0, "random_state": 7}
    assert common.resolve_params(Ridge, None, None, 7) == {"random_state": 7}
    assert "random_state" not in common.resolve_params(
        common.import_estimator("sklearn.linear_model.LinearRegression"), {}, {}, 7
    )
    with pytest.raises(common.StageError, match="no parameter"):
        common.resolve_params(Ridge, {"bogus": 1}, None, 0)
    df = pd.DataFrame({"x": np.arange(40.0), "target": [0] * 20 + [1] * 20})
    pre, _ = preprocess.build_preprocessor(df, "target", {})
    model, metrics = train.fit(
        df, "target", "classification", pre, LogisticRegression()
    )
    assert metrics["accuracy"] == 1.0 and list(model.classes_) == [0, 1]


def test_the_signature_holds_the_columns_the_preprocessor_reads() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "id": np.arange(40), "a": rng.normal(size=40), "b": rng.normal(size=40),
        "c": rng.normal(size=40), "target": [0, 1] * 20,
    })  # fmt: skip
    x, columns = df.drop(columns=["target"]), ["id", "a", "b", "c"]
    pre, _ = preprocess.build_preprocessor(df, "target", {"drop": ["id"]})
    model, _ = train.fit(df, "target", "classification", pre, LogisticRegression())
    assert train.read_columns(model, columns) == ["a", "b", "c"]
    # However a ColumnTransformer names its columns; "drop" is never read,
    # and a remainder that passes through reads the rest.
    for chosen, remainder, want in (
        ([1, 3], "drop", ["a", "c"]),
        (slice(1, 3), "drop", ["a", "b"]),
        ([False, True, False, True], "drop", ["a", "c"]),
        (["b"], "passthrough", ["id", "a", "b"]),
    ):
        pre = ColumnTransformer(
            [("num", StandardScaler(), chosen), ("gone", "drop", ["c"])],
            remainder=remainder,
        )
        model, _ = train.fit(df, "target", "classification", pre, LogisticRegression())
        assert train.read_columns(model, columns) == want, (chosen, remainder)
        assert len(model.predict(x[want])) == len(x)  # the rest is not needed
    # Any other first step reads every column.
    model, _ = train.fit(
        df, "target", "classification", StandardScaler(), LogisticRegression()
    )
    assert train.read_columns(model, columns) == columns


def test_an_integer_column_an_imputer_fills_is_a_number_in_the_signature() -> None:
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "id": np.arange(40), "n": rng.integers(0, 9, 40), "k": rng.integers(0, 9, 40),
        "a": rng.normal(size=40), "target": [0, 1] * 20,
    })  # fmt: skip
    columns = ["id", "n", "k", "a"]
    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
         ["n", "a"]),
        ("plain", StandardScaler(), ["k"]),
        ("gone", "drop", ["id"]),
    ])  # fmt: skip
    model, _ = train.fit(df, "target", "classification", pre, LogisticRegression())
    assert train.imputed_columns(model, columns) == ["n", "a"]
    example = train.signature_example(model, df[columns], 5)
    assert list(example.columns) == ["n", "k", "a"]
    types = {c.name: c.type.name for c in infer_signature(example).inputs.inputs}
    # n may be missing (the imputer fills it); k may not: it stays an integer.
    assert types == {
        "n": "double", "k": "long", "a": "double"
    }  # fmt: skip
    assert df["n"].dtype == np.int64  # the training frame is untouched
    # preprocess's own numeric pipeline imputes unless told not to.
    built, _ = preprocess.build_preprocessor(df, "target", {"drop": ["id"]})
    model, _ = train.fit(df, "target", "classification", built, LogisticRegression())
    assert train.imputed_columns(model, columns) == ["n", "k", "a"]
    none, _ = preprocess.build_preprocessor(
        df, "target", {"drop": ["id"], "numeric": {"impute": "none"}}
    )
    model, _ = train.fit(df, "target", "classification", none, LogisticRegression())
    assert train.imputed_columns(model, columns) == []


# --- evaluate -------------------------------------------------------------


def test_gates() -> None:
    metrics = {"accuracy": 0.91, "rmse": 2.0}
    gates = [
        {"metric": "accuracy", "min": 0.9},
        {"metric": "accuracy", "max_drop": 0.01},
        {"metric": "rmse", "max": 1.5},
        {"metric": "rmse", "max_drop": 0.5},
        {"metric": "f1", "min": 0.5},
    ]
    calls = []

    def prod():
        calls.append(1)
        return {"accuracy": 0.95, "rmse": 1.8}

    out = evaluate.check_gates(gates, metrics, prod)
    verdicts = [g["passed"] for g in out["gates"]]
    assert verdicts == [True, False, False, True, False]
    assert out["passed"] is False and len(calls) == 1
    assert out["gates"][1]["production_value"] == 0.95
    none = evaluate.check_gates(gates[1:2], metrics, lambda: None)
    assert none["passed"] and none["gates"][0]["detail"] == evaluate.NO_PRODUCTION
    assert evaluate.check_gates([], metrics, prod) == {"passed": True, "gates": []}


def test_curve_data_binary_only() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    curves = evaluate.curve_data(y, proba, [0, 1])
    assert curves["roc"][-1] == {"fpr": 1.0, "tpr": 1.0}
    assert evaluate.curve_data(y, proba, [0, 1, 2]) == {}


# --- tune -----------------------------------------------------------------


def _tiny_classification():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    return pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "target": (x[:, 0] > 0).astype(int)}
    )


def test_tune_candidates_respect_trials() -> None:
    from stages import tune

    space = {"C": [1, 2, 3], "fit_intercept": [True, False]}
    assert len(tune.candidates(space, "grid", 4, 0)) == 4
    assert tune.candidates(space, "random", 3, 0) == tune.candidates(
        space, "random", 3, 0
    )
    assert len(tune.candidates(space, "random", 50, 0)) == 6
    with pytest.raises(common.StageError, match="non-empty"):
        tune.candidates({"C": []}, "grid", 3, 0)


def test_tune_search_methods_and_budget() -> None:
    from sklearn.linear_model import LogisticRegression

    from stages import tune

    df = _tiny_classification()
    pre, _ = preprocess.build_preprocessor(df, "target", {})
    pipe = common.build_pipeline(pre, LogisticRegression())
    space = {"C": [0.001, 1.0, 10.0]}
    grid = tune.search(
        df,
        "target",
        pipe,
        {"method": "grid", "space": space, "metric": "accuracy", "cv": 2},
        0,
    )
    assert [t["params"]["C"] for t in grid] == [0.001, 1.0, 10.0]
    assert tune.best(grid)["C"] in (1.0, 10.0)
    none = tune.search(
        df, "target", pipe, {"method": "grid", "space": space, "time_budget": 0}, 0
    )
    assert none == []
    halving = tune.search(
        df,
        "target",
        pipe,
        {"method": "halving", "space": space, "trials": 3, "cv": 2},
        0,
    )
    assert halving and all("C" in t["params"] for t in halving)


def test_a_setting_that_names_no_column_gets_its_key_and_the_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    columns = [f"c{i}" for i in range(20)] + ["label"]
    assert common.not_columns(["c3", "label"], columns) == ""
    assert common.not_columns(["lable", "zzz"], columns) == (
        "'lable' is not a column of the data; did you mean 'label'?; "
        "'zzz' is not a column of the data "
        "(columns: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, ... (21 in all))"
    )
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"x": [1], "label": [0]})
    # No spec here (the params came from elsewhere): the key alone.
    with pytest.raises(common.StageError) as no_spec:
        common.split_xy(frame, "lable")
    assert str(no_spec.value).startswith("project -> target: 'lable' is not a column")
    (tmp_path / "mlops.yaml").write_text("version: 1\nproject:\n  target: lable\n")
    with pytest.raises(common.StageError) as located:
        preprocess.split_data(frame, "lable", "regression", {}, 0)
    assert str(located.value) == (
        "mlops.yaml:3:3: project -> target: 'lable' is not a column of the data; "
        "did you mean 'label'? (columns: x, label)"
    )
    # A spec that says something else was not the one compiled: no line.
    (tmp_path / "mlops.yaml").write_text("version: 1\nproject:\n  target: y\n")
    with pytest.raises(common.StageError, match=r"^project -> target: 'lable'"):
        common.require_target(frame.columns, "lable")
    with pytest.raises(common.StageError, match=r"^drop: 'idd' is not a column"):
        preprocess.feature_columns(frame, "label", {"drop": ["idd"]})
