"""The bundled example's ML work as one plain script, the baseline for overhead.

It does what the six stages do, in one process and without the framework:
snapshot the data as Parquet, check a few rules, run deepchecks'
data_integrity suite and keep its HTML page, split, fit the same pipeline,
score it, draw the three plots and log them with the metrics, log the model
to MLflow, convert it to ONNX and check the graph's predictions on the test
split, and register it.

Until 2026-12-02 it kept neither the HTML page nor the plots in MLflow, drew
no precision-recall curve and did no ONNX conversion (bench/README.md, "The
baseline does the stages' work").

    .venv/bin/python bench/plain_pipeline.py WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(workdir: Path) -> dict[str, float]:  # noqa: PLR0915 (one script on purpose)
    times: dict[str, float] = {}
    t = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import skops.io
    from deepchecks.tabular import Dataset
    from deepchecks.tabular.suites import data_integrity
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        RocCurveDisplay,
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    times["imports"] = time.perf_counter() - t

    t = time.perf_counter()
    df = load_breast_cancer(as_frame=True).frame
    df.to_parquet(workdir / "data.parquet", index=False)
    times["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    assert df["target"].isin([0, 1]).all()  # noqa: S101
    assert df["mean radius"].between(0, 100).all()  # noqa: S101
    result = data_integrity().run(Dataset(df, label="target", cat_features=[]))
    result.save_as_html(str(workdir / "deepchecks.html"), as_widget=False)
    times["validate"] = time.perf_counter() - t

    t = time.perf_counter()
    train, test = train_test_split(
        df, test_size=0.25, stratify=df["target"], random_state=42
    )
    x, y = train.drop(columns="target"), train["target"]
    xt, yt = test.drop(columns="target"), test["target"]
    times["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("plain")
    model = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", RandomForestClassifier(200, max_depth=6, random_state=42)),
        ]
    )
    model.fit(x, y)
    mlflow.start_run()
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=trusted,
        input_example=x.head(5),
        pip_requirements=["scikit-learn==1.7.2", "skops==0.16.0"],
    )
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    plots = workdir / "plots"
    plots.mkdir()
    pred, proba = model.predict(xt), model.predict_proba(xt)[:, 1]
    metrics = {
        "accuracy": accuracy_score(yt, pred),
        "precision": precision_score(yt, pred),
        "recall": recall_score(yt, pred),
        "f1": f1_score(yt, pred),
        "roc_auc": roc_auc_score(yt, proba),
    }
    mlflow.log_metrics(metrics)
    for name, draw in (
        (
            "confusion",
            lambda ax: ConfusionMatrixDisplay.from_predictions(yt, pred, ax=ax),
        ),
        ("roc", lambda ax: RocCurveDisplay.from_predictions(yt, proba, ax=ax)),
        (
            "precision_recall",
            lambda ax: PrecisionRecallDisplay.from_predictions(yt, proba, ax=ax),
        ),
    ):
        fig, ax = plt.subplots()
        draw(ax)
        fig.savefig(plots / f"{name}.png")
        plt.close(fig)
    mlflow.log_artifacts(str(plots), "plots")
    times["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    import numpy as np
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    graph = convert_sklearn(
        model,
        initial_types=[(c, FloatTensorType([None, 1])) for c in xt.columns],
        target_opset={"": 18, "ai.onnx.ml": 3},
        options={id(model.steps[-1][1]): {"zipmap": False}},
    ).SerializeToString()
    (workdir / "model.onnx").write_bytes(graph)
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    feed = {
        i.name: xt[[c]].to_numpy(np.float32)
        for i, c in zip(session.get_inputs(), xt.columns, strict=True)
    }
    labels = session.run(None, feed)[0]
    assert (np.asarray(labels).ravel() == pred).all()  # noqa: S101
    mlflow.log_artifact(str(workdir / "model.onnx"), "onnx")
    version = mlflow.register_model(info.model_uri, "plain")
    mlflow.MlflowClient().set_registered_model_alias(
        "plain", "candidate", version.version
    )
    mlflow.end_run()
    times["register"] = time.perf_counter() - t
    return times


if __name__ == "__main__":
    start = time.perf_counter()
    result = main(Path(sys.argv[1]))
    result["total"] = time.perf_counter() - start
    print(json.dumps(result))
