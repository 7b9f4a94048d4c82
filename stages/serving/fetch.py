"""Which version to serve, its files in a local cache, checked and hashed.

The version is the one holding ``registry.production_alias``, or the one
asked for. It is downloaded once into ``.mlops/serving/<model>/<version>-<run
id>/`` (a registry reset gives the same number a new run, hence the run id),
and checked every time the server starts by :mod:`stages.modelfile` (the
MLmodel's loader and paths, the skops file's types against the project's
allow-list). The sha256 of the bytes checked, read once, goes to the workers,
which load only bytes that hash to it.

ONNX is served only when the version says its conversion was verified (tag
``mlops.onnx`` = ``verified``, written at register time), the file the run
logged at ``onnx/model.onnx`` hashes to the version's ``mlops.onnx.sha256``
tag, and onnxruntime loads it with one input per signature column; otherwise
the scikit-learn pipeline serves, and ``/version`` says why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stages import common, deploy, lookups, onnx_export, promote
from stages.register import (
    ONNX_ARTIFACT,
    ONNX_ARTIFACT_DIR,
    TAG_ONNX,
    TAG_ONNX_DETAIL,
    TAG_ONNX_SHA256,
    TAG_RUN_ID,
)
from stages.serving.inputs import Column, signature_columns

CACHE = Path(".mlops/serving")
# Where the cache goes when the checkout is read-only (a serving pod's image).
FALLBACK_CACHE = "mlops-serving"
_NUMERIC_ONNX = ("tensor(float)", "tensor(double)", "tensor(int64)", "tensor(int32)")


def cache_dir(preferred: Path = CACHE) -> Path:
    """The download cache: ``.mlops/serving``, or a temporary folder if read-only."""
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / FALLBACK_CACHE


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve(client: Any, params: Mapping[str, Any], version: str | None) -> Any:
    """The model version asked for, else the one holding the production alias."""
    from mlflow.exceptions import MlflowException

    reg = promote.registry(params)
    if version is not None:
        try:
            return client.get_model_version(reg.model, str(version))
        except MlflowException as e:
            if not lookups.absent(e):
                raise lookups.failure(
                    e, f"get_model_version({reg.model!r}, {str(version)!r})"
                ) from e
            raise common.StageError(
                f"{reg.model} has no version {version} in the registry at "
                f"{common.tracking_uri(params)}"
            ) from e
    found = promote.by_alias(client, reg.model, reg.production)
    if found is None:
        raise common.StageError(
            f"no version of {reg.model} holds @{reg.production}: run `mlops promote`, "
            "or pass --version"
        )
    return found


def _run_id(version: Any) -> str:
    return str((version.tags or {}).get(TAG_RUN_ID) or version.run_id or "")


def _cached(folder: Path, **download: str) -> Path:
    """Download once: into a temporary sibling, then renamed into place whole."""
    import mlflow

    if folder.exists():
        return folder
    tmp = folder.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        got = Path(mlflow.artifacts.download_artifacts(dst_path=str(tmp), **download))
        try:
            got.rename(folder)
        except OSError:
            if not folder.exists():  # another server won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def check(params: Mapping[str, Any], model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Load through the gate; return the model and what the workers need."""
    model, checked = deploy.check_model(params, model_dir)
    signature = (checked.conf.get("signature") or {}).get("inputs")
    if not signature:
        raise common.StageError(
            f"the model at {model_dir} has no input signature; `mlops serve` checks "
            "every request against it (the train stage logs one)"
        )
    try:
        columns = signature_columns(signature)
    except ValueError as e:
        raise common.StageError(str(e)) from e
    classes = getattr(model, "classes_", None)
    task = common.project(params)["task"]
    return model, {
        "model_dir": str(model_dir.resolve()),
        "skops_file": str(checked.skops_file.resolve()),
        "skops_sha256": checked.sha256,
        "allow": list(common.project_allow(params)),
        "columns": [[c.name, c.type] for c in columns],
        "classes": None
        if classes is None or task != common.CLASSIFICATION
        else list(classes.tolist()),
    }


def onnx_inputs_fit(path: Path, columns: Sequence[Column]) -> str | None:
    """Why onnxruntime cannot serve this graph for these columns, or None."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own, unexported types
        return f"onnxruntime cannot load it: {e}"
    graph = session.get_inputs()
    if len(graph) != len(columns):
        return f"it has {len(graph)} inputs, the signature {len(columns)} columns"
    for i, (node, column) in enumerate(zip(graph, columns, strict=True)):
        # Booleans go in as strings, like every non-numeric column (onnx_export).
        text = (onnx_export.STRING,)
        want = {"str": text, "bool": (*text, *_NUMERIC_ONNX)}.get(
            column.kind, _NUMERIC_ONNX
        )
        if node.type not in want:
            return (
                f"input {i} ({node.name}) is {node.type}, "
                f"column {column.name!r} is {column.type}"
            )
    return None


def choose_onnx(
    version: Any, folder: Path, columns: Sequence[Column]
) -> tuple[dict[str, str] | None, dict[str, Any]]:
    """The verified ONNX file to serve (path and sha256), and the reason either way."""
    tags = version.tags or {}
    tag, want = tags.get(TAG_ONNX), tags.get(TAG_ONNX_SHA256)
    status: dict[str, Any] = {"tag": tag, "detail": tags.get(TAG_ONNX_DETAIL)}
    if tag != onnx_export.VERIFIED or not want:
        why = f"tag {TAG_ONNX} is {tag!r}" if tag else f"no {TAG_ONNX} tag"
        return None, {**status, "served": False, "why": f"{why}, not verified"}
    import mlflow

    run_id = _run_id(version)
    target = folder / "onnx"
    uri = f"runs:/{run_id}/{ONNX_ARTIFACT_DIR}"
    try:
        if target.exists() and sha256(target / "model.onnx") != want:
            shutil.rmtree(target)  # a stale copy: fetch the run's file again
        # From the run's artifact root, not `run_id=`: MLflow's runs:/ download
        # reads every failure, a refused one included, as "does not exist".
        root = mlflow.MlflowClient().get_run(run_id).info.artifact_uri
        uri = f"{root.rstrip('/')}/{ONNX_ARTIFACT_DIR}"
        _cached(target, artifact_uri=uri)
    except lookups.faults() as e:
        # Only a file the store says is not there is a reason to serve the
        # scikit-learn model; a refused or failing download is a failure.
        if not lookups.absent(e):
            raise lookups.failure(e, f"download_artifacts({uri!r})") from e
        why = f"cannot download {ONNX_ARTIFACT} from run {run_id}: {e}"
        return None, {**status, "served": False, "why": why}
    path = target / "model.onnx"
    found = sha256(path) if path.is_file() else "none"
    if found != want:
        why = (
            f"{ONNX_ARTIFACT} has sha256 {found}, "
            f"the version's {TAG_ONNX_SHA256} tag {want}"
        )
        return None, {**status, "served": False, "why": why}
    problem = onnx_inputs_fit(path, columns)
    if problem:
        return None, {**status, "served": False, "why": f"{ONNX_ARTIFACT}: {problem}"}
    onnx = {
        "path": str(path.resolve()),
        "sha256": found,
        "missing_string": onnx_export.MISSING_STRING,
    }
    return onnx, {**status, "served": True}


@lookups.guarded
def prepare(
    params: Mapping[str, Any], version: str | None = None, cache: Path = CACHE
) -> tuple[dict[str, Any], Any]:
    """Resolve, download (once), check; return what the server serves and the model."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(common.tracking_uri(params))
    client = mlflow.MlflowClient()
    found = resolve(client, params, version)
    name, number, run_id = str(found.name), str(found.version), _run_id(found)
    folder = cache / name / f"{number}-{run_id or 'norun'}"
    model_dir = _cached(folder / "model", artifact_uri=f"models:/{name}/{number}")
    model, checked = check(params, model_dir)
    columns = [Column(n, t) for n, t in checked["columns"]]
    onnx, onnx_status = choose_onnx(found, folder, columns)
    tags = found.tags or {}
    served = {
        "model": name,
        "version": number,
        "run_id": run_id,
        "git_commit": tags.get(common.TAG_GIT_COMMIT),
        "git_changes": common.trained_changes(tags),
        "data_md5": tags.get(common.TAG_DATA_HASH),
        **checked,
        "onnx": onnx,
        "onnx_status": onnx_status,
    }
    return served, model


def describe(served: Mapping[str, Any]) -> str:
    """One line: which version, and why it is served by ONNX or scikit-learn."""
    status = served["onnx_status"]
    how = "onnxruntime (verified ONNX)" if served["onnx"] else (
        f"scikit-learn ({status.get('why')})")  # fmt: skip
    return f"{served['model']} version {served['version']}, predicting with {how}"
