"""Every default the schema declares is the default the code applies.

The test reads each `default` from schema/mlops.schema.json and checks the
behaviour of the code that applies it, with the key left out of a spec:
the Spec and params.yaml the runner builds, the manifests and workflows it
writes, the serving command, and the stage cores (which keep literal
fallbacks for their `with` settings: read from the schema at run time, a
schema edit would change a stage's output without DVC re-running it). A new
default without a check here fails `test_every_default_has_a_check`.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from runner import compile as compiler
from runner import plan as planner
from runner import release
from runner import spec as specs
from runner.deploy_state import Release
from runner.schema import schema

MINIMAL = textwrap.dedent(
    """\
    version: 1
    project: {name: demo, task: classification, target: target}
    data:
      raw: {sklearn: iris}
      db: {sql: {query: SELECT 1}}
    pipeline:
      ingest: {uses: ingest, with: {source: raw}}
      prep: {uses: preprocess, needs: [ingest]}
      train:
        uses: train
        needs: [prep]
        with: {estimator: sklearn.linear_model.LogisticRegression}
      evaluate: {uses: evaluate, needs: [train]}
      register: {uses: register, needs: [evaluate]}
    deploy:
      target: kubernetes
      argocd: {repo: https://example.com/r.git}
      secrets: {MLFLOW_TRACKING_URI: mlflow/uri}
    """
)


def _defaults() -> dict[str, Any]:
    """`definition.key.key` -> default, for every default in the schema."""
    found: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: list[str]) -> None:
        if "default" in node:
            found[".".join(path)] = node["default"]
        for key, child in node.get("properties", {}).items():
            walk(child, [*path, key])

    for name, definition in schema()["$defs"].items():
        walk(definition, [name])
    return found


DEFAULTS = _defaults()


@cache
def _built() -> tuple[specs.Spec, dict[str, Any], dict[str, Any]]:
    spec = specs.parse(MINIMAL, "mlops.yaml")
    files = compiler.render(spec, Release("demo", "1", "0" * 32))
    loaded = {name: yaml.safe_load(text) for name, text in files.items()}
    return spec, planner.build(spec).params, loaded


def _spec() -> specs.Spec:
    return _built()[0]


def _params() -> dict[str, Any]:
    return _built()[1]


def _file(name: str) -> Any:
    return _built()[2][name]


def _serve_flag(flag: str) -> str:
    args = argparse.Namespace(
        host=None, port=None, workers=None, prediction_log=None, version=None
    )
    local = {**_spec().deploy, "target": "local"}
    argv = release.serve_args(args, local, {})
    return argv[argv.index(flag) + 1]


def _frame(rows: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [float(i % 7) if i % 5 else None for i in range(rows)],
            "c": [None if i % 6 == 0 else "ab"[i % 2] for i in range(rows)],
            "target": [i % 2 for i in range(rows)],
        }
    )


def _same_without_and_with(run: Callable[[dict[str, Any]], Any], key: str, value: Any):
    """The behaviour with `key` left out equals the behaviour with it set."""
    return run({}) == run({key: value})


def _split(settings: dict[str, Any]) -> tuple[list[int], list[int]]:
    from stages import preprocess

    train, test = preprocess.split_data(
        _frame(), "target", "classification", settings, 7
    )
    return list(train.index), list(test.index)


def _preprocessor(group: str) -> Callable[[dict[str, Any]], str]:
    def build(settings: dict[str, Any]) -> str:
        from stages import preprocess

        return repr(
            preprocess.build_preprocessor(_frame(), "target", {group: settings})
        )

    return build


def _tune(
    settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list]:
    """(folds asked for, the trials tried) of a search, with scoring stubbed."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from stages import preprocess, tune

    folds: list[Any] = []

    def score(model: Any, x: Any, y: Any, scoring: Any = None, cv: Any = None) -> Any:
        folds.append(cv)
        return np.array([0.5])

    monkeypatch.setattr("sklearn.model_selection.cross_val_score", score)
    df = _frame()
    pipe = common_pipeline(
        preprocess.build_preprocessor(df, "target", {}), LogisticRegression()
    )
    space = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "max_iter": [50, 100, 200]}
    trials = tune.search(df, "target", pipe, {"space": space, **settings}, 7)
    return folds[0], [t["params"] for t in trials]


def common_pipeline(pre: Any, est: Any) -> Any:
    from stages import common

    return common.build_pipeline(pre, est)


def _severity() -> set[str]:
    from stages import validate

    series = pd.Series([1.0, 2.0, 30.0], name="x")
    column = validate.check_column(series, {"max": 10})
    rows = validate.check_rules(pd.DataFrame({"x": series}), {}, {"min": 10})
    missing = validate.check_rules(pd.DataFrame({"y": series}), {"x": {}}, None)
    return {r["severity"] for r in column + rows + missing if not r["passed"]}


def _tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from stages import common

    monkeypatch.chdir(tmp_path)  # a SQLite URI's folder is created
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return common.tracking_uri({})


def _argo(kind: str) -> list[dict[str, Any]]:
    return [_file(f"argo/{n}.yaml") for n in ("workflow-template", "cron-workflow")]


def _workflows() -> list[dict[str, Any]]:
    return [v for k, v in _built()[2].items() if k.startswith(".github/")]


def _kube(kind: str) -> dict[str, Any]:
    return next(
        v
        for k, v in _built()[2].items()
        if k.startswith("deploy/") and v.get("kind") == kind
    )


Fixtures = tuple[Path, pytest.MonkeyPatch]
# Each default -> a check of the behaviour that applies it: true when it is.
CHECKS: dict[str, Callable[[Any, Fixtures], bool]] = {
    "project.seed": lambda d, f: (
        _params()["project"]["seed"] == d
        and __import__("stages.common").common.project({})["seed"] == d
    ),
    "storage.remote.name": lambda d, f: (
        {"name": "MLOPS_DVC_REMOTE", "value": d}
        in _file("argo/workflow-template.yaml")["spec"]["templates"][1]["container"][
            "env"
        ]
    ),
    "storage.remote.url": lambda d, f: (
        {"name": "MLOPS_DVC_REMOTE_URL", "value": d}
        in _file("argo/workflow-template.yaml")["spec"]["templates"][1]["container"][
            "env"
        ]
    ),
    "storage.mlflow.tracking_uri": lambda d, f: (
        _params()["tracking"]["uri"] == d and _tracking_uri(*f) == d
    ),
    "source.sql.url": lambda d, f: _spec().data["db"]["sql"]["url"] == d,
    "severity": lambda d, f: _severity() == {d},
    "with-preprocess.split.method": lambda d, f: _same_without_and_with(
        lambda s: _split({"test_size": 0.25, **s}), "method", d
    ),
    "with-preprocess.split.test_size": lambda d, f: (
        _same_without_and_with(_split, "test_size", d)
        and len(_split({})[1]) == round(len(_frame()) * d)
    ),
    "with-preprocess.numeric.impute": lambda d, f: _same_without_and_with(
        _preprocessor("numeric"), "impute", d
    ),
    "with-preprocess.numeric.scale": lambda d, f: _same_without_and_with(
        _preprocessor("numeric"), "scale", d
    ),
    "with-preprocess.categorical.impute": lambda d, f: _same_without_and_with(
        _preprocessor("categorical"), "impute", d
    ),
    "with-preprocess.categorical.encode": lambda d, f: _same_without_and_with(
        _preprocessor("categorical"), "encode", d
    ),
    "with-tune.method": lambda d, f: _tune({}, f[1]) == _tune({"method": d}, f[1]),
    "with-tune.trials": lambda d, f: len(_tune({}, f[1])[1]) == d,
    "with-tune.cv": lambda d, f: _tune({}, f[1])[0] == d,
    "with-evaluate.deepchecks": lambda d, f: (
        d is False and "deepchecks" not in _params()["stages"]["evaluate"]["with"]
    ),
    "with-register.alias": lambda d, f: _params()["registry"]["candidate_alias"] == d,
    "registry.candidate_alias": lambda d, f: (
        _params()["registry"]["candidate_alias"] == d
    ),
    "registry.production_alias": lambda d, f: (
        _params()["registry"]["production_alias"] == d
    ),
    "deploy.environment": lambda d, f: any(
        job.get("environment") == d for w in _workflows() for job in w["jobs"].values()
    ),
    "deploy.target": lambda d, f: (
        specs.parse(MINIMAL.replace("  target: kubernetes\n", ""), "mlops.yaml").deploy[
            "target"
        ]
        == d
    ),
    "deploy.host": lambda d, f: _serve_flag("--host") == d,
    "deploy.port": lambda d, f: _serve_flag("--port") == str(d),
    "deploy.workers": lambda d, f: _serve_flag("--workers") == str(d),
    "deploy.max_request_bytes": lambda d, f: (
        _serve_flag("--max-request-bytes") == str(d)
    ),
    "deploy.prediction_log.path": lambda d, f: _serve_flag("--log-dir") == d,
    "deploy.prediction_log.sample": lambda d, f: (
        float(_serve_flag("--log-sample")) == d
    ),
    "deploy.prediction_log.max_bytes": lambda d, f: (
        _serve_flag("--log-max-bytes") == str(d)
    ),
    "deploy.prediction_log.backups": lambda d, f: (
        _serve_flag("--log-backups") == str(d)
    ),
    "deploy.replicas.min": lambda d, f: (
        _kube("HorizontalPodAutoscaler")["spec"]["minReplicas"] == d
    ),
    "deploy.replicas.max": lambda d, f: (
        _kube("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == d
    ),
    "deploy.replicas.cpu_utilization": lambda d, f: (
        str(d) in yaml.safe_dump(_kube("HorizontalPodAutoscaler")["spec"]["metrics"])
    ),
    "deploy.resources": lambda d, f: (
        _kube("Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"][
            "limits"
        ]
        == d
    ),
    "deploy.argocd.revision": lambda d, f: (
        _kube("Application")["spec"]["source"]["targetRevision"] == d
    ),
    "deploy.argocd.namespace": lambda d, f: (
        _kube("Application")["metadata"]["namespace"] == d
    ),
    "deploy.argocd.project": lambda d, f: _kube("Application")["spec"]["project"] == d,
    "monitoring.schedule": lambda d, f: (
        _file("argo/cron-workflow.yaml")["spec"]["schedules"] == [d]
    ),
    "monitoring.drift_threshold": lambda d, f: (
        _spec().monitoring["drift_threshold"] == d
    ),
    "monitoring.retrain": lambda d, f: _spec().monitoring["retrain"] == d,
    "monitoring.min_rows": lambda d, f: _spec().monitoring["min_rows"] == d,
    "ci.runs_on": lambda d, f: all(
        job["runs-on"] == d for w in _workflows() for job in w["jobs"].values()
    ),
    "ci.python": lambda d, f: (
        f"python-version: '{d}'" in "".join(yaml.safe_dump(w) for w in _workflows())
    ),
    "ci.retrain_token": lambda d, f: (
        f"secrets.{d}" in yaml.safe_dump(_file(".github/workflows/mlops-monitor.yml"))
    ),
    "argo.namespace": lambda d, f: all(
        m["metadata"]["namespace"] == d for m in _argo("")
    ),
    "argo.service_account": lambda d, f: all(
        (m["spec"].get("workflowSpec") or m["spec"])["serviceAccountName"] == d
        for m in _argo("")
    ),
    "argo.resources": lambda d, f: all(
        t["container"]["resources"] == {"requests": d, "limits": d}
        for m in _argo("")
        for t in (m["spec"].get("workflowSpec") or m["spec"])["templates"]
        if "container" in t
    ),
    "argo.ttl_seconds": lambda d, f: all(
        (m["spec"].get("workflowSpec") or m["spec"])["ttlStrategy"][
            "secondsAfterCompletion"
        ]
        == d
        for m in _argo("")
    ),
}


def test_every_default_has_a_check() -> None:
    assert sorted(DEFAULTS) == sorted(CHECKS), "add a check for each new default"


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_the_code_applies_the_schemas_default(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure
) -> None:
    assert key in CHECKS, f"{key}: no check of its default"
    assert CHECKS[key](DEFAULTS[key], (tmp_path, monkeypatch)), (
        f"{key}: the schema says {DEFAULTS[key]!r}, the code applies something else"
    )
    figure(
        "defaults",
        "a default the schema declares",
        "the code applies the same value",
    )


def test_a_regression_split_is_random() -> None:
    """The one default the schema cannot state: `stratified` needs classes, so a
    regression's split is `random` (and `stratified` is refused for it)."""
    from stages import preprocess

    df = _frame().assign(target=[float(i) for i in range(40)])
    unset = preprocess.split_data(df, "target", "regression", {}, 7)
    random = preprocess.split_data(df, "target", "regression", {"method": "random"}, 7)
    assert [list(p.index) for p in unset] == [list(p.index) for p in random]
