"""Register: add the run's logged model to the registry and set the alias.

The alias (default ``registry.candidate_alias``) is set only when every gate
passed. Re-running for the same training run reuses its version instead of
creating a new one, and deletes any later copy of it that a retried request
left (one run, one version). A registry that cannot be read fails the stage:
it is never taken for an empty one.

The pipeline is also converted to ONNX and checked on the whole test split
(:mod:`stages.onnx_export`). A converted graph is written to the ``onnx``
output and logged in the training run at :data:`ONNX_ARTIFACT`; the version's
:data:`TAG_ONNX` says whether it may be served (only ``verified``), and
:data:`TAG_ONNX_SHA256` which bytes were checked. When nothing converted the
output is an empty file, nothing is logged and there is no sha256 tag.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages import common, lookups, modelfile, onnx_export, run_then_leave

KIND = "register"
TAG_RUN_ID = "mlops.run_id"
TAG_GATES = "mlops.gates_passed"
# onnx_export.VERIFIED, MISMATCH or UNSUPPORTED: serve the graph only if verified.
TAG_ONNX = "mlops.onnx"
# Hex sha256 of the logged graph's bytes; absent when no graph was logged.
TAG_ONNX_SHA256 = "mlops.onnx.sha256"
TAG_ONNX_DETAIL = "mlops.onnx.detail"
# Where the graph is logged in the version's training run (run.json's run_id).
ONNX_ARTIFACT_DIR = "onnx"
ONNX_ARTIFACT = f"{ONNX_ARTIFACT_DIR}/model.onnx"


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
    if run.get("git_dirty") is not None:  # older run.json files do not say
        tags[common.TAG_GIT_DIRTY] = str(bool(run["git_dirty"])).lower()
    if run.get("git_changes"):
        tags[common.TAG_GIT_CHANGES] = str(run["git_changes"])
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    for g in gates.get("gates") or []:
        tags[f"gate.{g['metric']}.{g['rule']}"] = "pass" if g["passed"] else "fail"
    return tags


def onnx_tags(result: onnx_export.Export) -> dict[str, str]:
    """Tags recording the ONNX check; the sha256 only when a graph was logged."""
    tags = {TAG_ONNX: result.status, TAG_ONNX_DETAIL: result.detail}
    if result.sha256 is not None:
        tags[TAG_ONNX_SHA256] = result.sha256
    return tags


def _versions_of(client: Any, name: str, run_id: str) -> list[Any]:
    """The versions of ``name`` registered from ``run_id``, oldest first.

    A model not registered yet has none. Any other failure raises: reading it
    as "none" would register the same run a second time.
    """
    from mlflow.exceptions import MlflowException

    query = f"name='{name}'"
    try:
        versions = client.search_model_versions(query)
    except MlflowException as e:
        if lookups.absent(e):
            return []
        raise lookups.failure(e, f"search_model_versions({query!r})") from e
    mine = [v for v in versions if (v.tags or {}).get(TAG_RUN_ID) == run_id]
    return sorted(mine, key=lambda v: int(v.version))


def _existing_version(client: Any, name: str, run_id: str) -> Any | None:
    """The version already registered from ``run_id``, or None."""
    found = _versions_of(client, name, run_id)
    return found[0] if found else None


def _drop_duplicates(client: Any, name: str, run_id: str, keep: Any) -> None:
    """Delete later versions of the same run that hold no alias.

    MLflow's client retries a create whose answer was lost (a 500 from a proxy
    after the server acted, a dropped connection), so one run can end up with
    several versions; the first one is the run's version, the rest are copies.
    """
    for found in _versions_of(client, name, run_id):
        if str(found.version) == str(keep.version):
            continue
        # A search leaves out aliases; the version itself says which it holds.
        v = client.get_model_version(name, found.version)
        if v.aliases:
            common.warn(
                KIND,
                f"{name} version {v.version} is a second copy of run {run_id} but "
                f"holds @{', @'.join(v.aliases)}: left in place",
            )
            continue
        client.delete_model_version(name, v.version)
        common.warn(
            KIND,
            f"deleted {name} version {v.version}: a copy of version {keep.version} "
            f"(run {run_id}) left by a retried request",
        )


def _export_onnx(params: dict[str, Any], spec: dict[str, Any]) -> onnx_export.Export:
    """Convert the trained pipeline and check it on the test split; write the
    ``onnx`` output (empty when nothing converted)."""
    proj = common.project(params)
    model_dir = common.need(spec, "inputs", "model")
    model = modelfile.load_model_dir(model_dir, common.project_allow(params))
    test = common.read_parquet(common.need(spec, "inputs", "test"))
    columns = onnx_export.signature_columns(model_dir) or onnx_export.frame_columns(
        test.drop(columns=[proj["target"]], errors="ignore")
    )
    result = onnx_export.export(model, columns, test, proj["target"], proj["task"])
    out = common.ensure_parent(common.need(spec, "outputs", "onnx"))
    out.write_bytes(result.onnx or b"")
    return result


def _log_onnx(client: Any, run_id: str, result: onnx_export.Export) -> None:
    """Log the graph in the training run at ONNX_ARTIFACT (nothing without one)."""
    if result.onnx is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(ONNX_ARTIFACT).name
        local.write_bytes(result.onnx)
        client.log_artifact(run_id, str(local), ONNX_ARTIFACT_DIR)


def _say_onnx(result: onnx_export.Export) -> None:
    timing = (
        f"converted in {result.convert_seconds:.2f}s, "
        f"checked in {result.check_seconds:.2f}s"
    )
    message = f"ONNX {result.status}: {result.detail} ({timing})"
    if result.status == onnx_export.VERIFIED:
        common.say(KIND, message)
    else:
        common.warn(KIND, f"{message}; the server will fall back to scikit-learn")


def _onnx_summary(run_id: str, result: onnx_export.Export) -> dict[str, Any]:
    logged = result.onnx is not None
    return {
        "status": result.status,
        "detail": result.detail,
        "sha256": result.sha256,
        "artifact_uri": f"runs:/{run_id}/{ONNX_ARTIFACT}" if logged else None,
    }


def _retag(client: Any, name: str, version: Any, tags: dict[str, str]) -> None:
    """Re-set every tag of a reused version; drop a sha256 no longer backed by
    a logged graph."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    if TAG_ONNX_SHA256 in (version.tags or {}) and TAG_ONNX_SHA256 not in tags:
        client.delete_model_version_tag(name, version.version, TAG_ONNX_SHA256)


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
    onnx = _export_onnx(params, spec)
    _say_onnx(onnx)
    start = time.perf_counter()
    common.setup_mlflow(params)
    client = mlflow.MlflowClient()
    # Log before registering: a version tagged verified always has its graph.
    _log_onnx(client, run["run_id"], onnx)
    tags = {**version_tags(run, metrics, gates), **onnx_tags(onnx)}
    version = _existing_version(client, name, run["run_id"])
    reused = version is not None
    if version is None:
        model_uri = run.get("model_uri") or f"runs:/{run['run_id']}/model"
        # Created with every tag at once: a version never exists half-tagged.
        version = mlflow.register_model(model_uri, name, tags=tags)
        version = _existing_version(client, name, run["run_id"]) or version
    else:
        _retag(client, name, version, tags)
    _drop_duplicates(client, name, run["run_id"], version)
    passed = bool(gates.get("passed"))
    if passed:
        client.set_registered_model_alias(name, alias, version.version)
    summary = {
        "model": name,
        "version": str(version.version),
        "alias": alias if passed else None,
        "gates_passed": passed,
        "run_id": run["run_id"],
        "model_uri": f"models:/{name}/{version.version}",
        "reused_existing_version": reused,
        "onnx": _onnx_summary(run["run_id"], onnx),
    }
    common.write_json(common.need(spec, "outputs", "registered"), summary)
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
    return common.run_stage(KIND, argv, lookups.guarded(_run))


if __name__ == "__main__":
    run_then_leave(main)
