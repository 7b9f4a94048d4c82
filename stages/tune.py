"""Tune: search estimator hyper-parameters with cross-validation.

Candidates come from ParameterGrid (grid), ParameterSampler (random) or
HalvingRandomSearchCV (halving). No new trial starts once ``trials`` or the
``time_budget`` is spent. Each trial is a nested MLflow run under one parent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from stages import common, run_then_leave

KIND = "tune"
METHODS = ("grid", "random", "halving")
STEP = "model__"


def candidates(
    space: Mapping[str, list[Any]], method: str, trials: int, seed: int
) -> list[dict[str, Any]]:
    """The parameter sets to try, at most ``trials`` of them, in a seeded order."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if not space:
        raise common.StageError("tune needs a non-empty 'space'")
    bad = [k for k, v in space.items() if not isinstance(v, list) or not v]
    if bad:
        raise common.StageError(f"space values must be non-empty lists: {bad}")
    if method == "grid":
        return list(ParameterGrid(dict(space)))[:trials]
    size = len(ParameterGrid(dict(space)))
    return list(
        ParameterSampler(dict(space), n_iter=min(trials, size), random_state=seed)
    )


def search(
    train_df: pd.DataFrame,
    target: str,
    pipeline: Any,
    settings: Mapping[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """Cross-validate candidates; one dict per trial with params and scores."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    method = settings.get("method", "random")
    if method not in METHODS:
        raise common.StageError(f"method must be one of {', '.join(METHODS)}")
    trials, cv = int(settings.get("trials", 10)), int(settings.get("cv", 3))
    budget = float(settings.get("time_budget", float("inf")))
    metric = settings.get("metric")
    x, y = common.split_xy(train_df, target)
    if method == "halving":
        return _halving(pipeline, x, y, settings=settings, seed=seed, trials=trials)
    start = time.perf_counter()
    out = []
    for i, params in enumerate(candidates(settings["space"], method, trials, seed)):
        if time.perf_counter() - start >= budget:
            break
        t0 = time.perf_counter()
        model = clone(pipeline).set_params(**{STEP + k: v for k, v in params.items()})
        try:
            scores = cross_val_score(model, x, y, scoring=metric, cv=cv)
        except ValueError as e:
            raise common.StageError(f"trial {i} with {params} failed: {e}") from e
        out.append(
            {
                "trial": i,
                "params": params,
                "mean_score": float(scores.mean()),
                "std_score": float(scores.std()),
                "seconds": time.perf_counter() - t0,
            }
        )
    return out


def _halving(pipeline, x, y, *, settings, seed, trials) -> list[dict[str, Any]]:
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    space = {STEP + k: v for k, v in settings["space"].items()}
    searcher = HalvingRandomSearchCV(
        pipeline,
        space,
        n_candidates=trials,
        scoring=settings.get("metric"),
        cv=int(settings.get("cv", 3)),
        random_state=seed,
        refit=False,
    )
    searcher.fit(x, y)
    res = searcher.cv_results_
    return [
        {
            "trial": i,
            "params": {k.removeprefix(STEP): v for k, v in res["params"][i].items()},
            "mean_score": float(res["mean_test_score"][i]),
            "std_score": float(res["std_test_score"][i]),
            "seconds": float(res["mean_fit_time"][i]),
        }
        for i in range(len(res["params"]))
    ]


def best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Parameters of the best-scoring trial (scorers are greater-is-better)."""
    scored = [t for t in trials if t["mean_score"] == t["mean_score"]]  # drop NaN
    if not scored:
        raise common.StageError("no trial produced a score")
    return max(scored, key=lambda t: (t["mean_score"], -t["trial"]))["params"]


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    import joblib
    import mlflow

    proj = common.project(params)
    settings = spec["with"]
    cls = common.import_estimator(settings.get("estimator", ""), settings.get("allow"))
    base = common.resolve_params(cls, {}, None, int(proj["seed"]))
    pipeline = common.build_pipeline(
        joblib.load(common.need(spec, "inputs", "preprocessor")), cls(**base)
    )
    df = common.read_parquet(common.need(spec, "inputs", "train"))
    start = time.perf_counter()
    trials = search(df, proj["target"], pipeline, settings, int(proj["seed"]))
    chosen = best(trials)
    common.setup_mlflow(params)
    with mlflow.start_run(run_name=stage_id):
        mlflow.log_params({"estimator": settings["estimator"], "trials": len(trials)})
        for t in trials:
            with mlflow.start_run(run_name=f"trial-{t['trial']}", nested=True):
                mlflow.log_params(t["params"])
                mlflow.log_metrics(
                    {"mean_score": t["mean_score"], "std_score": t["std_score"]}
                )
        mlflow.log_params({f"best_{k}": v for k, v in chosen.items()})
    common.write_json(common.need(spec, "outputs", "best_params"), chosen)
    rows = [
        {
            "trial": t["trial"],
            "params": json.dumps(t["params"], sort_keys=True),
            "mean_score": t["mean_score"],
            "std_score": t["std_score"],
        }
        for t in trials
    ]
    out = common.ensure_parent(common.need(spec, "outputs", "trials"))
    pd.DataFrame(rows).to_csv(out, index=False)
    common.say(
        KIND,
        f"{len(trials)} trials in {time.perf_counter() - start:.1f}s; best {chosen}",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tune stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    run_then_leave(main)
