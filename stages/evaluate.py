"""Evaluate: score the trained model on the test split, apply the gates, plot.

Gates never fail the stage: the report must still be written. ``max_drop``
gates compare with the model holding the production alias, scored on the same
test data.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stages import common, lookups, modelfile, run_then_leave, suites

KIND = "evaluate"
NO_PRODUCTION = "no production model yet"


def score(model: Any, test: pd.DataFrame, target: str, task: str, names: Sequence[str]):
    """Predict on ``test`` and return (metrics, y_true, y_pred, proba)."""
    x, y = common.split_xy(test, target)
    pred = model.predict(x)
    proba = None
    classes = None
    if task == common.CLASSIFICATION:
        classes = list(model.classes_)
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(x)
    metrics = common.compute_metrics(task, names, y, pred, proba=proba, classes=classes)
    return metrics, y, pred, proba


def check_gates(
    gates: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, float],
    production: Callable[[], Mapping[str, float] | None],
) -> dict[str, Any]:
    """Apply each gate; ``production`` lazily scores the production model.

    A ``max_drop`` gate passes when ``production - value <= max_drop`` for
    metrics where higher is better, and ``value - production <= max_drop``
    for error metrics (mae, mse, rmse, log_loss).
    """
    results = []
    prod_cache: list[Mapping[str, float] | None] = []
    for gate in gates:
        name = str(gate.get("metric"))
        value = metrics.get(name)
        entry: dict[str, Any] = {"metric": name, "value": value}
        if value is None:
            results.append(
                {
                    **entry,
                    "rule": _rule(gate),
                    "threshold": _threshold(gate),
                    "passed": False,
                    "detail": f"metric '{name}' was not computed",
                }
            )
            continue
        if "min" in gate:
            ok = value >= gate["min"]
            results.append(
                {
                    **entry,
                    "rule": "min",
                    "threshold": gate["min"],
                    "passed": ok,
                    "detail": f"{name}={value:.4f} {'>=' if ok else '<'} {gate['min']}",
                }
            )
        if "max" in gate:
            ok = value <= gate["max"]
            results.append(
                {
                    **entry,
                    "rule": "max",
                    "threshold": gate["max"],
                    "passed": ok,
                    "detail": f"{name}={value:.4f} {'<=' if ok else '>'} {gate['max']}",
                }
            )
        if "max_drop" in gate:
            if not prod_cache:
                prod_cache.append(production())
            results.append(_drop_gate(entry, gate, prod_cache[0]))
    return {"passed": all(r["passed"] for r in results), "gates": results}


def _rule(gate: Mapping[str, Any]) -> str:
    return next((k for k in ("min", "max", "max_drop") if k in gate), "unknown")


def _threshold(gate: Mapping[str, Any]) -> Any:
    return gate.get(_rule(gate))


def _drop_gate(
    entry: dict[str, Any], gate: Mapping[str, Any], prod: Mapping[str, float] | None
) -> dict[str, Any]:
    name, value, limit = entry["metric"], entry["value"], gate["max_drop"]
    base = {**entry, "rule": "max_drop", "threshold": limit}
    if prod is None:
        return {**base, "passed": True, "detail": NO_PRODUCTION}
    pv = prod.get(name)
    if pv is None:
        return {**base, "passed": False, "detail": f"production model has no '{name}'"}
    drop = (value - pv) if name in common.LOWER_IS_BETTER else (pv - value)
    ok = drop <= limit + 1e-12
    return {
        **base,
        "production_value": pv,
        "passed": ok,
        "detail": f"{name}={value:.4f} vs production {pv:.4f}: drop "
        f"{drop:.4f} {'<=' if ok else '>'} {limit}",
    }


def production_metrics(
    params: Mapping[str, Any], test: pd.DataFrame, names: Sequence[str]
) -> dict[str, float] | None:
    """Score the model holding the production alias, or None if there is none.

    None only when the registry says no version holds the alias: a refused or
    failing look-up raises, so no ``max_drop`` gate passes on a fault.
    """
    import mlflow

    registry = params.get("registry") or {}
    name = str(registry.get("model") or common.project(params)["name"])
    alias = registry.get("production_alias", "production")
    version = lookups.by_alias(mlflow.MlflowClient(), name, alias)
    if version is None:
        return None
    return version_metrics(params, f"models:/{name}/{version.version}", test, names)


def version_metrics(
    params: Mapping[str, Any], model_uri: str, test: pd.DataFrame, names: Sequence[str]
) -> dict[str, float]:
    """Download a registered model, load it through the allow-list and score it."""
    import mlflow

    proj = common.project(params)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp)
        model = modelfile.load_model_dir(local, common.project_allow(params))
        metrics, *_ = score(model, test, proj["target"], proj["task"], names)
    return metrics


def feature_importance(model: Any) -> pd.DataFrame | None:
    """Importances (or |coef|) by transformed feature name, when the model has them."""
    import numpy as np

    est = model[-1] if hasattr(model, "steps") else model
    values = getattr(est, "feature_importances_", None)
    if values is None and hasattr(est, "coef_"):
        coef = np.atleast_2d(est.coef_)
        values = np.abs(coef).mean(axis=0)
    if values is None:
        return None
    try:
        names = list(model[:-1].get_feature_names_out())
    except (AttributeError, ValueError, TypeError, IndexError):
        names = [f"f{i}" for i in range(len(values))]
    if len(names) != len(values):
        names = [f"f{i}" for i in range(len(values))]
    frame = pd.DataFrame({"feature": names, "importance": np.asarray(values, float)})
    return frame.sort_values("importance", ascending=False, kind="mergesort")


def curve_data(y: Any, proba: Any, classes: Sequence[Any]) -> dict[str, list[dict]]:
    """ROC and precision-recall points for a binary problem (empty otherwise)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    binary = 2
    if proba is None or len(classes) != binary:
        return {}
    pos = classes[1]
    fpr, tpr, _ = roc_curve(y, proba[:, 1], pos_label=pos)
    prec, rec, _ = precision_recall_curve(y, proba[:, 1], pos_label=pos)
    return {
        "roc": [
            {"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr, strict=True)
        ],
        "prc": [
            {"recall": float(a), "precision": float(b)}
            for a, b in zip(rec, prec, strict=True)
        ],
    }


def write_plots(
    out: Path, task: str, model: Any, *, y: Any, pred: Any, proba: Any
) -> list[Path]:
    """Write plot data (CSV/JSON for ``dvc plots``) and PNG images into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written: list[Path] = []

    def png(name: str, draw: Callable[[Any], object]) -> None:
        fig, ax = plt.subplots(figsize=(5, 4))
        try:
            draw(ax)
            fig.tight_layout()
            fig.savefig(out / name, dpi=80)
            written.append(out / name)
        finally:
            plt.close(fig)

    if task == common.CLASSIFICATION:
        _classification_plots(
            out, model, y=y, pred=pred, proba=proba, png=png, written=written
        )
    else:
        frame = pd.DataFrame({"actual": y, "predicted": pred})
        frame["residual"] = frame["actual"] - frame["predicted"]
        frame.to_csv(out / "residuals.csv", index=False)
        written.append(out / "residuals.csv")
        png(
            "residuals.png",
            lambda ax: (
                ax.scatter(frame["predicted"], frame["residual"], s=8),
                ax.axhline(0, color="grey"),
                ax.set(xlabel="predicted", ylabel="residual", title="Residuals"),
            ),
        )
    imp = feature_importance(model)
    if imp is not None:
        imp.to_csv(out / "importance.csv", index=False)
        written.append(out / "importance.csv")
        top = imp.head(20).iloc[::-1]
        png(
            "importance.png",
            lambda ax: (
                ax.barh(top["feature"].astype(str), top["importance"]),
                ax.set(title="Feature importance"),
                ax.tick_params(axis="y", labelsize=6),
            ),
        )
    return written


def _classification_plots(out, model, *, y, pred, proba, png, written) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    conf = pd.DataFrame(
        {
            "actual": pd.Series(y).astype(str).to_numpy(),
            "predicted": pd.Series(pred).astype(str).to_numpy(),
        }
    )
    conf.to_csv(out / "confusion.csv", index=False)
    written.append(out / "confusion.csv")
    png(
        "confusion.png",
        lambda ax: ConfusionMatrixDisplay.from_predictions(
            y, pred, ax=ax, colorbar=False
        ),
    )
    curves = curve_data(y, proba, list(model.classes_))
    for name, points in curves.items():
        path = out / f"{name}.json"
        common.write_json(path, {name: points})
        written.append(path)
    if curves:
        roc, prc = pd.DataFrame(curves["roc"]), pd.DataFrame(curves["prc"])
        png(
            "roc.png",
            lambda ax: (
                ax.plot(roc["fpr"], roc["tpr"]),
                ax.plot([0, 1], [0, 1], "--", c="grey"),
                ax.set(
                    xlabel="false positive rate",
                    ylabel="true positive rate",
                    title="ROC",
                ),
            ),
        )
        png(
            "prc.png",
            lambda ax: (
                ax.plot(prc["recall"], prc["precision"]),
                ax.set(xlabel="recall", ylabel="precision", title="Precision-recall"),
            ),
        )


def model_evaluation(
    model: Any, train: pd.DataFrame | None, test: pd.DataFrame, target: str
) -> tuple[list[dict[str, Any]], str]:
    """deepchecks' model_evaluation suite: per-check verdicts and the HTML page.

    Its findings are informational (severity warning): the gates decide.
    """
    suites.load_deepchecks()
    from deepchecks.tabular.suites import model_evaluation as suite

    test_ds = suites.deepchecks_dataset(test, target)
    run = suites.applicable(suite()).run
    if train is None:
        result = run(train_dataset=test_ds, model=model)
    else:
        train_ds = suites.deepchecks_dataset(train, target)
        result = run(train_dataset=train_ds, test_dataset=test_ds, model=model)
    checks = suites.suite_results("model_evaluation", suites.WARNING, result)
    return checks, suites.suite_html(result)


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    import mlflow

    proj = common.project(params)
    settings = spec["with"]
    names = settings.get("metrics") or list(common.DEFAULT_METRICS[proj["task"]])
    start = time.perf_counter()
    model = modelfile.load_model_dir(
        common.need(spec, "inputs", "model"), common.project_allow(params)
    )
    test = common.read_parquet(common.need(spec, "inputs", "test"))
    metrics, y, pred, proba = score(model, test, proj["target"], proj["task"], names)
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise common.StageError(f"metrics are not finite: {', '.join(bad)}")
    missing = [n for n in names if n not in metrics]
    if missing:
        common.warn(KIND, f"could not compute {', '.join(missing)} for this model")
    run = common.read_json(common.need(spec, "inputs", "run"))
    common.setup_mlflow(params)
    verdicts = check_gates(
        params.get("gates") or [],
        metrics,
        lambda: production_metrics(params, test, names),
    )
    pages: list[tuple[str, str]] = []
    if settings.get("deepchecks"):
        train_path = spec["inputs"].get("train")
        train = common.read_parquet(train_path) if train_path else None
        checks, page = model_evaluation(model, train, test, proj["target"])
        verdicts["model_evaluation"] = checks
        pages.append(("model_evaluation", page))
        failed = sum(not c["passed"] for c in checks)
        common.say(
            KIND,
            f"deepchecks model_evaluation: {failed} of {len(checks)} checks flagged",
        )
    suites.write_suite_report(
        common.need(spec, "outputs", "evaluation_report"),
        pages,
        "Model evaluation report",
    )
    plots_dir = common.need(spec, "outputs", "plots")
    written = write_plots(plots_dir, proj["task"], model, y=y, pred=pred, proba=proba)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("gates_passed", float(verdicts["passed"]))
        mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
    common.write_json(common.need(spec, "outputs", "metrics"), metrics)
    common.write_json(common.need(spec, "outputs", "gates"), verdicts)
    common.say(
        KIND,
        ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        + f" on {len(test)} test rows in {time.perf_counter() - start:.1f}s"
        + f"; {len(written)} plot files",
    )
    for g in verdicts["gates"]:
        common.say(KIND, f"gate {'PASS' if g['passed'] else 'FAIL'}: {g['detail']}")
    common.say(KIND, "all gates passed" if verdicts["passed"] else "gates FAILED")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the evaluate stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, lookups.guarded(_run))


if __name__ == "__main__":
    run_then_leave(main)
