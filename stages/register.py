"""Register: add the run's logged model to the registry and set the alias.

The alias (default ``registry.candidate_alias``) is set only when every gate
passed. Re-running for the same training run reuses its version instead of
creating a new one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from stages import common

KIND = "register"
TAG_RUN_ID = "mlops.run_id"
TAG_GATES = "mlops.gates_passed"


def version_tags(
    run: Mapping[str, Any], metrics: Mapping[str, float], gates: Mapping[str, Any]
) -> dict[str, str]:
    """Tags for the model version: provenance, metrics and gate verdicts."""
    tags = {
        TAG_RUN_ID: str(run["run_id"]),
        common.TAG_DATA_HASH: str(run.get("data_md5") or ""),
        TAG_GATES: str(bool(gates.get("passed"))).lower(),
    }
    if run.get("git_commit"):
        tags[common.TAG_GIT_COMMIT] = str(run["git_commit"])
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    for g in gates.get("gates") or []:
        tags[f"gate.{g['metric']}.{g['rule']}"] = "pass" if g["passed"] else "fail"
    return tags


def _existing_version(client: Any, name: str, run_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for v in versions:
        if (v.tags or {}).get(TAG_RUN_ID) == run_id:
            return v
    return None


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    import mlflow

    registry = params.get("registry") or {}
    name = registry.get("model") or common.project(params).get("name")
    if not name:
        raise common.StageError("registry.model (or project.name) is required")
    alias = spec["with"].get("alias") or registry.get("candidate_alias", "candidate")
    run = common.read_json(common.need(spec, "inputs", "run"))
    metrics = common.read_json(common.need(spec, "inputs", "metrics"))
    gates = common.read_json(common.need(spec, "inputs", "gates"))
    start = time.perf_counter()
    common.setup_mlflow(params)
    client = mlflow.MlflowClient()
    tags = version_tags(run, metrics, gates)
    version = _existing_version(client, name, run["run_id"])
    reused = version is not None
    if version is None:
        model_uri = run.get("model_uri") or f"runs:/{run['run_id']}/model"
        version = mlflow.register_model(model_uri, name, tags=tags)
    else:
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
    passed = bool(gates.get("passed"))
    if passed:
        client.set_registered_model_alias(name, alias, version.version)
    common.write_json(
        common.need(spec, "outputs", "registered"),
        {
            "model": name,
            "version": str(version.version),
            "alias": alias if passed else None,
            "gates_passed": passed,
            "run_id": run["run_id"],
            "model_uri": f"models:/{name}/{version.version}",
            "reused_existing_version": reused,
        },
    )
    what = "reused" if reused else "registered"
    secs = time.perf_counter() - start
    if passed:
        common.say(
            KIND, f"{what} {name} version {version.version} as @{alias} in {secs:.1f}s"
        )
    else:
        common.say(
            KIND,
            f"{what} {name} version {version.version} WITHOUT alias @{alias}: "
            "gates failed",
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the register stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
