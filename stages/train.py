"""Train: fit Pipeline(preprocessor, estimator) and log it to MLflow.

The estimator is imported only from ``sklearn.`` or a prefix the spec allows.
The fitted pipeline is saved as an MLflow model directory (skops format, its
bytes canonical: :mod:`stages.modelfile`) and logged in the run, with the git
commit and the train data hash as tags.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages import common, modelfile, run_then_leave

KIND = "train"
MODEL_ARTIFACT = "model"
INPUT_EXAMPLE_ROWS = 5


def predict_all(pipeline: Any, x: pd.DataFrame) -> tuple[Any, Any]:
    """Predictions and class probabilities (None when unavailable)."""
    pred = pipeline.predict(x)
    proba = pipeline.predict_proba(x) if hasattr(pipeline, "predict_proba") else None
    return pred, proba


def fit(
    train: pd.DataFrame,
    target: str,
    task: str,
    preprocessor: Any,
    estimator: Any,
) -> tuple[Any, dict[str, float]]:
    """Fit the pipeline on ``train`` and return it with its train metrics."""
    x, y = common.split_xy(train, target)
    pipeline = common.build_pipeline(preprocessor, estimator)
    try:
        pipeline.fit(x, y)
    except (ValueError, TypeError) as e:
        raise common.StageError(f"fitting failed: {e}") from e
    pred, proba = predict_all(pipeline, x)
    classes = list(pipeline.classes_) if task == common.CLASSIFICATION else None
    metrics = common.compute_metrics(
        task, common.DEFAULT_METRICS[task], y, pred, proba=proba, classes=classes
    )
    return pipeline, metrics


def saved_and_trusted(
    pipeline: Any, prefixes: tuple[str, ...]
) -> tuple[bytes, list[str]]:
    """The pipeline's canonical skops bytes, and the types skops must trust to
    load them, checked against the allow-list (the bytes are saved once: these
    are what MLflow logs)."""
    import skops.io

    data = modelfile.canonical_bytes(pipeline)
    found = skops.io.get_untrusted_types(data=data)
    # The gate every command loads through: refused here rather than at load.
    return data, modelfile.check_types(found, prefixes)


def _selections(pipeline: Any, columns: list[str]) -> list[tuple[Any, set[str]]] | None:
    """(transformer, the columns it reads) of the pipeline's fitted
    ColumnTransformer, or None when its first step is anything else."""
    first = pipeline.steps[0][1] if hasattr(pipeline, "steps") else pipeline
    fitted = getattr(first, "transformers_", None)
    seen = getattr(first, "feature_names_in_", None)
    if fitted is None or seen is None or list(seen) != list(columns):
        return None
    names = np.asarray(seen, dtype=object)
    out = []
    for _, transformer, selected in fitted:
        if isinstance(selected, str):
            read = {selected}
        elif isinstance(selected, slice):
            read = {str(c) for c in names[selected]}
        elif (picked := np.asarray(selected)).dtype.kind in "biu":
            read = {str(c) for c in names[picked]}  # positions, or a mask
        else:
            read = {str(c) for c in picked}
        out.append((transformer, read))
    return out


def read_columns(pipeline: Any, columns: list[str]) -> list[str]:
    """The columns of ``columns`` the fitted pipeline reads, in their order.

    A ColumnTransformer (what preprocess builds) reads every column a fitted
    transformer names, except those given to "drop", such as the identifiers
    ``preprocess.with.drop`` lists; predicting does not need those, so they are
    not in the model's signature: the server does not ask for them and the
    monitor does not score their drift. Any other first step reads them all.
    """
    selections = _selections(pipeline, columns)
    if selections is None:
        return list(columns)
    read = set().union(
        *(cols for t, cols in selections if not (isinstance(t, str) and t == "drop"))
    )
    return [c for c in columns if c in read]


def _imputes(transformer: Any) -> bool:
    steps = getattr(transformer, "steps", None)
    chain = [step for _, step in steps] if steps is not None else [transformer]
    return any(type(step).__module__.startswith("sklearn.impute") for step in chain)


def imputed_columns(pipeline: Any, columns: list[str]) -> list[str]:
    """The columns of ``columns`` an imputer of the fitted pipeline fills.

    An integer column the training data had no gap in still takes a missing
    value there: the signature must say "double" for it, as MLflow advises,
    since an integer cannot be missing and the server would refuse ``null``.
    """
    selections = _selections(pipeline, columns) or []
    filled = set().union(*(cols for t, cols in selections if _imputes(t)))
    return [c for c in columns if c in filled]


def signature_example(pipeline: Any, x: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The input example the signature is inferred from: the columns the
    pipeline reads, integers an imputer fills as floats."""
    columns = list(x.columns)
    example = x[read_columns(pipeline, columns)].head(rows).copy()
    for column in imputed_columns(pipeline, columns):
        if column in example and pd.api.types.is_integer_dtype(example[column].dtype):
            example[column] = example[column].astype("float64")
    return example


def git_tags(commit: str, changes: list[str]) -> dict[str, str]:
    """The commit the model was trained from, and whether the tree had
    uncommitted changes then (naming at most MAX_GIT_CHANGES of them)."""
    tags = {
        common.TAG_GIT_COMMIT: commit,
        common.TAG_GIT_DIRTY: str(bool(changes)).lower(),
    }
    if changes:
        tags[common.TAG_GIT_CHANGES] = common.name_changes(changes)
    return tags


def _log_and_save(
    pipeline: Any,
    x: pd.DataFrame,
    saved: tuple[bytes, list[str]],
    out: Path,
) -> Any:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    data, trusted = saved
    example = signature_example(pipeline, x, INPUT_EXAMPLE_ROWS)
    signature = infer_signature(example, pipeline.predict(example))
    kwargs = {
        "signature": signature,
        "input_example": example,
        "pip_requirements": list(common.MODEL_PIP_REQUIREMENTS),
        "serialization_format": "skops",
        "skops_trusted_types": trusted,
    }
    # skops stamps times and ids into its archive: the logged file is the
    # canonical bytes, so the same pipeline gives the same bytes.
    with modelfile.canonical_dumps(pipeline, data):
        info = mlflow.sklearn.log_model(pipeline, name=MODEL_ARTIFACT, **kwargs)
    # Copy the logged model rather than serialise it again (the same skops
    # bytes), minus the MLmodel fields naming the run and the time: run.json
    # has the run, and the DVC-tracked copy stays the same on every machine.
    if out.exists():
        shutil.rmtree(out)
    common.ensure_parent(out)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
        shutil.copytree(local, out)
    modelfile.strip_identity(out)
    return info


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    proj = common.project(params)
    settings = spec["with"]
    allow = settings.get("allow") or []
    cls = common.import_estimator(settings.get("estimator", ""), allow)
    best_path = common.role_path(spec, "inputs", "best_params")
    best = common.read_json(best_path) if best_path and best_path.exists() else None
    est_params = common.resolve_params(
        cls, settings.get("params"), best, int(proj["seed"])
    )

    import joblib
    import mlflow

    train_path = common.need(spec, "inputs", "train")
    train = common.read_parquet(train_path)
    preprocessor = joblib.load(common.need(spec, "inputs", "preprocessor"))
    start = time.perf_counter()
    pipeline, metrics = fit(
        train, proj["target"], proj["task"], preprocessor, cls(**est_params)
    )
    seconds = time.perf_counter() - start
    saved = saved_and_trusted(pipeline, common.project_allow(params))

    uri = common.setup_mlflow(params)
    data_md5 = common.file_md5(train_path)
    commit = common.git_commit()
    run_path = common.need(spec, "outputs", "run")
    changes = common.git_changes(str(run_path)) if commit else None
    git = git_tags(commit, changes or []) if commit else {}
    tags = {common.TAG_DATA_HASH: data_md5, common.TAG_STAGE: stage_id, **git}
    with mlflow.start_run(run_name=stage_id, tags=tags) as run:
        mlflow.log_params({"estimator": settings["estimator"], **est_params})
        mlflow.log_metrics({f"train_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("fit_seconds", seconds)
        x, _ = common.split_xy(train, proj["target"])
        info = _log_and_save(pipeline, x, saved, common.need(spec, "outputs", "model"))
    common.write_json(common.need(spec, "outputs", "train_metrics"), metrics)
    common.write_json(
        run_path,
        {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "tracking_uri": uri,
            "model_uri": info.model_uri,
            "data_md5": data_md5,
            "git_commit": commit,
            "git_dirty": git.get(common.TAG_GIT_DIRTY) == "true" if commit else None,
            "git_changes": git.get(common.TAG_GIT_CHANGES),
        },
    )
    common.say(
        KIND,
        f"fitted {cls.__name__} on {len(train)} rows in {seconds:.1f}s; "
        + ", ".join(f"train {k}={v:.3f}" for k, v in metrics.items()),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the train stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    run_then_leave(main)
