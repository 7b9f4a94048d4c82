"""Each stage's main, end to end, in a temp project with a real MLflow SQLite store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import modelfile, onnx_export, register
from tests.stages.conftest import build_params, registry_versions, run_stage

EXAMPLE_VALIDATE = {
    "rows": {"min": 100},
    "columns": {
        "target": {"allowed": [0, 1], "max_null_share": 0},
        "mean radius": {"type": "float", "min": 0, "max": 100, "max_null_share": 0},
        "mean texture": {"type": "float", "min": 0, "severity": "warning"},
    },
}
RF = "sklearn.ensemble.RandomForestClassifier"


def _pipeline(
    validate: dict, preprocess: dict, train: dict, evaluate: dict | None = None
):
    return [
        ("ingest", "ingest", {"source": "src"}),
        ("validate", "validate", validate),
        ("preprocess", "preprocess", preprocess),
        ("train", "train", train),
        ("evaluate", "evaluate", evaluate or {}),
        ("register", "register", {}),
    ]


def _run_all(kinds: list[str]) -> None:
    for kind in kinds:
        assert run_stage(kind) == 0, f"stage {kind} failed"


def _read(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def _onnx_of(version, run_id: str, root: Path) -> bytes:
    """The version's verified graph: logged in its run, tagged with its sha256,
    identical to the register stage's DVC output."""
    import mlflow

    tags = version.tags
    assert tags[register.TAG_ONNX] == onnx_export.VERIFIED, tags
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{run_id}/{register.ONNX_ARTIFACT}", dst_path=str(root / "dl")
    )
    data = Path(local).read_bytes()
    assert hashlib.sha256(data).hexdigest() == tags[register.TAG_ONNX_SHA256]
    assert data == (root / "artifacts/register/model.onnx").read_bytes()
    return data


def _assert_onnx_reproduces(root: Path, data: bytes) -> None:
    """onnxruntime, fed as the server feeds it, predicts what sklearn does."""
    import onnxruntime as ort

    from stages import common

    model = modelfile.load_model_dir(
        root / "artifacts/train/model", common.TRUSTED_MODULE_PREFIXES
    )
    columns = onnx_export.signature_columns(root / "artifacts/train/model")
    assert columns is not None
    x = pd.read_parquet(root / "artifacts/preprocess/test.parquet")
    x = x[[name for name, _ in columns]]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run(None, onnx_export.feed(x, session.get_inputs()))
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(out[0], model.predict(x))
        # Inputs are float32 in the graph: a value next to a split threshold
        # can send a row down the other branch of one tree (1/n_trees).
        diff = np.abs(out[1] - model.predict_proba(x)).max(axis=1)
        assert diff.max() < 0.05 and np.mean(diff < 1e-5) > 0.95
    else:
        np.testing.assert_allclose(out[0].ravel(), model.predict(x), rtol=1e-4)


def _assert_unsupported(root: Path, registered: dict, culprit: str) -> None:
    """No converter: registered anyway, tagged why, nothing logged."""
    import mlflow

    (version,) = [
        v
        for v in registry_versions(root, registered["model"])
        if str(v.version) == registered["version"]
    ]
    assert version.tags[register.TAG_ONNX] == onnx_export.UNSUPPORTED
    assert culprit in version.tags[register.TAG_ONNX_DETAIL]
    assert register.TAG_ONNX_SHA256 not in version.tags
    assert registered["onnx"]["artifact_uri"] is None
    assert (root / "artifacts/register/model.onnx").read_bytes() == b""
    client = mlflow.MlflowClient()
    assert client.list_artifacts(registered["run_id"], "onnx") == []


ALL = ["ingest", "validate", "preprocess", "train", "evaluate", "register"]


def test_breast_cancer_example(project, capsys) -> None:
    params = build_params(
        _pipeline(
            EXAMPLE_VALIDATE,
            {
                "split": {"method": "stratified", "test_size": 0.25},
                "numeric": {"impute": "median", "scale": "standard"},
            },
            {"estimator": RF, "params": {"n_estimators": 50, "max_depth": 6}},
            {"metrics": ["accuracy", "precision", "recall", "f1", "roc_auc"]},
        ),
        data={"src": {"sklearn": "breast_cancer"}},
        gates=[{"metric": "accuracy", "min": 0.9}, {"metric": "f1", "max_drop": 0.02}],
        name="cancer",
    )
    root = project(params)
    _run_all(ALL)
    metrics = _read(root, "artifacts/evaluate/metrics.json")
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert metrics["accuracy"] > 0.9
    gates = _read(root, "artifacts/evaluate/gates.json")
    assert gates["passed"] is True
    assert gates["gates"][1]["detail"] == "no production model yet"
    plots = {p.name for p in (root / "artifacts/evaluate/plots").iterdir()}
    assert {
        "confusion.csv",
        "roc.json",
        "prc.json",
        "confusion.png",
        "roc.png",
        "prc.png",
        "importance.png",
    } <= plots
    conf = pd.read_csv(root / "artifacts/evaluate/plots/confusion.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == 143
    assert (
        (root / "artifacts/validate/deepchecks.html").read_text().count("No deepchecks")
    )
    validation = _read(root, "artifacts/validate/validation.json")
    assert validation["passed"] is True and validation["counts"]["failed_errors"] == 0

    run = _read(root, "artifacts/train/run.json")
    assert {"run_id", "experiment_id", "tracking_uri"} <= set(run)
    registered = _read(root, "artifacts/register/registered.json")
    assert registered["version"] == "1" and registered["alias"] == "candidate"
    versions = registry_versions(root, "cancer")
    assert len(versions) == 1
    assert versions[0].tags["mlops.data_md5"] == run["data_md5"]
    assert versions[0].tags["mlops.run_id"] == run["run_id"]
    # The ONNX graph: checked on all 143 test rows, logged, reproducible.
    detail = versions[0].tags[register.TAG_ONNX_DETAIL]
    assert detail.startswith("143 of 143 test rows agree"), detail
    graph = _onnx_of(versions[0], run["run_id"], root)
    _assert_onnx_reproduces(root, graph)
    assert "ONNX verified" in capsys.readouterr().out

    # Re-running register for the same run reuses the version.
    assert run_stage("register") == 0
    assert len(registry_versions(root, "cancer")) == 1
    assert _read(root, "artifacts/register/registered.json")["reused_existing_version"]
    assert _onnx_of(registry_versions(root, "cancer")[0], run["run_id"], root) == graph

    # Promote it, make the new model much worse: the max_drop gate fails,
    # evaluate still succeeds, register adds a version without an alias.
    import mlflow

    client = mlflow.MlflowClient()
    client.set_registered_model_alias("cancer", "production", "1")
    params["stages"]["train"]["with"] = {
        "estimator": "sklearn.dummy.DummyClassifier",
        "params": {"strategy": "uniform"},
    }
    project(params)
    capsys.readouterr()
    _run_all(["train", "evaluate", "register"])
    out = capsys.readouterr().out
    assert "gate FAIL" in out and "WITHOUT alias" in out
    gates = _read(root, "artifacts/evaluate/gates.json")
    assert gates["passed"] is False
    assert gates["gates"][1]["production_value"] == pytest.approx(metrics["f1"])
    registered = _read(root, "artifacts/register/registered.json")
    assert registered["version"] == "2" and registered["alias"] is None
    _assert_unsupported(root, registered, "DummyClassifier")
    model = client.get_registered_model("cancer")
    assert {k: str(v) for k, v in model.aliases.items()} == {
        "candidate": "1",
        "production": "1",
    }


def test_failing_validation_rule_stops_the_pipeline(project, capsys) -> None:
    rules = {"columns": {"mean radius": {"min": 0, "max": 10}}}
    root = project(
        build_params(
            _pipeline(rules, {}, {"estimator": RF}),
            data={"src": {"sklearn": "breast_cancer"}},
            name="cancer",
        )
    )
    assert run_stage("ingest") == 0
    assert run_stage("validate") == 1
    err = capsys.readouterr().err
    assert "column 'mean radius'" in err and "above max 10 (error)" in err
    assert "Traceback" not in err
    summary = _read(root, "artifacts/validate/validation.json")
    assert summary["passed"] is False
    failing = [r for r in summary["results"] if not r["passed"]]
    assert [(r["column"], r["name"]) for r in failing] == [("mean radius", "max")]
    assert not (root / "artifacts/train").exists()
    assert registry_versions(root, "cancer") == []


def test_regression_on_diabetes(project) -> None:
    root = project(
        build_params(
            _pipeline(
                {"columns": {"target": {"type": "number", "min": 0}}},
                {"numeric": {"scale": "robust"}},
                {"estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
                {"deepchecks": True},
            ),
            data={"src": {"sklearn": "diabetes"}},
            task="regression",
            gates=[{"metric": "r2", "min": 0.3}, {"metric": "rmse", "max": 80}],
            name="diabetes",
        )
    )
    _run_all(ALL)
    metrics = _read(root, "artifacts/evaluate/metrics.json")
    assert set(metrics) == {"r2", "mae", "rmse"}
    assert 0.3 < metrics["r2"] < 1
    plots = {p.name for p in (root / "artifacts/evaluate/plots").iterdir()}
    assert {"residuals.csv", "residuals.png", "importance.csv"} <= plots
    registered = _read(root, "artifacts/register/registered.json")
    assert registered["alias"] == "candidate"
    (version,) = registry_versions(root, "diabetes")
    _assert_onnx_reproduces(root, _onnx_of(version, registered["run_id"], root))
    # Asked for, deepchecks' model_evaluation ran: its verdicts and its page.
    checks = _read(root, "artifacts/evaluate/gates.json")["model_evaluation"]
    assert len(checks) > 3
    assert all(c["name"].startswith("model_evaluation: ") for c in checks)
    page = (root / "artifacts/evaluate/deepchecks.html").read_text()
    assert "Model Evaluation Suite" in page


def _signature_inputs(root: Path) -> str:
    mlmodel = yaml.safe_load((root / "artifacts/train/model/MLmodel").read_text())
    return mlmodel["signature"]["inputs"]


def _messy_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    size = rng.normal(10, 3, n)
    label = ((colour == "red") | (size > 12)).astype(int)
    colour[rng.random(n) < 0.1] = None
    size[rng.random(n) < 0.1] = np.nan
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "colour": colour,
            "size": size,
            "shape": rng.choice(["round", "square"], n),
            "visits": rng.integers(0, 20, n),  # an integer with no gap
            "label": label,
        }
    )
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("categorical", "impute"),
    [
        ({"impute": "most_frequent", "encode": "onehot"}, "mean"),
        ({"impute": "constant", "encode": "ordinal"}, "most_frequent"),
    ],
)
def test_csv_with_categoricals_and_missing_values(
    project, tmp_path, categorical, impute
) -> None:
    _messy_csv(tmp_path / "messy.csv")
    root = project(
        build_params(
            _pipeline(
                {
                    "columns": {
                        "id": {"unique": True, "type": "integer"},
                        "colour": {
                            "allowed": ["red", "green", "blue"],
                            "max_null_share": 0.2,
                        },
                        "label": {"allowed": [0, 1]},
                    }
                },
                {
                    "numeric": {"impute": impute},
                    "categorical": categorical,
                    "drop": ["id"],
                },
                {"estimator": "sklearn.linear_model.LogisticRegression"},
            ),
            data={"src": {"path": "messy.csv"}},
            target="label",
            gates=[{"metric": "accuracy", "min": 0.7}],
            name="messy",
        )
    )
    _run_all(ALL)
    assert _read(root, "artifacts/evaluate/metrics.json")["accuracy"] > 0.7
    from stages import common

    model = modelfile.load_model_dir(
        root / "artifacts/train/model", common.TRUSTED_MODULE_PREFIXES
    )
    probe = pd.DataFrame(
        {
            "colour": [None, "purple"],
            "size": [np.nan, 11.0],
            "shape": ["round", None],
            "visits": [3, np.nan],
            "id": [1, 2],
        }
    )
    assert len(model.predict(probe)) == 2
    # The dropped identifier is not an input of the served model: the
    # signature (and so the server and the monitor) leaves it out.
    columns = onnx_export.signature_columns(root / "artifacts/train/model")
    assert [name for name, _ in columns or []] == ["colour", "size", "shape", "visits"]
    assert len(model.predict(probe.drop(columns=["id"]))) == 2
    # The imputer fills `visits` too, so the signature says double: the
    # server takes null for it, and the model predicts from the request.
    from stages.serving import inputs, predictor

    served = inputs.signature_columns(_signature_inputs(root))
    assert {c.name: c.type for c in served}["visits"] == "double"
    request = {"dataframe_records": [
        {"colour": "red", "size": 9.5, "shape": "round", "visits": None},
        {"colour": None, "size": None, "shape": "square", "visits": 4},
    ]}  # fmt: skip
    values = inputs.parse("application/json", json.dumps(request).encode(), served)
    assert len(predictor.SklearnPredictor(model, served).predict(values)) == 2
    # Categoricals with missing values convert too: the graph agrees on every row.
    (version,) = registry_versions(root, "messy")
    run_id = _read(root, "artifacts/train/run.json")["run_id"]
    _assert_onnx_reproduces(root, _onnx_of(version, run_id, root))


def test_tune_then_train_uses_best_params(project) -> None:
    space = {"C": [0.01, 0.1, 1.0, 10.0], "max_iter": [200, 500]}
    lr = "sklearn.linear_model.LogisticRegression"
    root = project(
        build_params(
            [
                ("ingest", "ingest", {"source": "src"}),
                ("preprocess", "preprocess", {}),
                (
                    "tune",
                    "tune",
                    {
                        "estimator": lr,
                        "method": "random",
                        "space": space,
                        "metric": "f1",
                        "trials": 3,
                        "cv": 3,
                    },
                ),
                ("train", "train", {"estimator": lr, "params": {"C": 123.0}}),
            ],
            data={"src": {"sklearn": "breast_cancer"}},
            name="tuned",
        )
    )
    _run_all(["ingest", "preprocess", "tune", "train"])
    trials = pd.read_csv(root / "artifacts/tune/trials.csv")
    assert len(trials) == 3
    best = _read(root, "artifacts/tune/best_params.json")
    assert set(best) == {"C", "max_iter"} and best["C"] != 123.0
    import mlflow

    run = mlflow.get_run(_read(root, "artifacts/train/run.json")["run_id"])
    assert float(run.data.params["C"]) == best["C"]
    nested = mlflow.search_runs(
        experiment_names=["tuned"], filter_string="tags.mlflow.parentRunId != ''"
    )
    assert len(nested) == 3
