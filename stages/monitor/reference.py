"""The reference: the train split the production model was trained on.

The version holding ``registry.production_alias`` carries the MD5 of the
train split its training run read (``mlops.data_md5``, written by train as
:func:`stages.common.file_md5`, which for one file is the MD5 DVC 3 files it
under). So the split is fetched by that hash, from this checkout's DVC cache
or else the DVC remote, and its bytes are checked against it: the train split
in the working tree, or the one ``dvc.lock`` names, may already be newer.

Anything that stops it (no production version, no hash tag, the object in
neither cache nor remote, a registry that does not answer) is a
:class:`Missing` with the reason, which the monitor reports as "could not
check", never as a crash or "no drift".
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stages import common, lookups, modelfile, promote
from stages.register import TAG_RUN_ID


class Missing(Exception):
    """The reference cannot be had; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Which model version, trained on which data at which commit."""

    model: str
    version: str
    run_id: str | None
    data_md5: str | None
    git_commit: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def identity(client: Any, params: Mapping[str, Any]) -> Identity:
    """The production version and the provenance its tags record."""
    reg = promote.registry(params)
    # A refused or failing look-up raises (a failure, exit 1); None is only
    # the registry saying no version holds the alias.
    version = promote.by_alias(client, reg.model, reg.production)
    if version is None:
        raise Missing(
            f"no version of {reg.model} holds @{reg.production} in the registry at "
            f"{common.tracking_uri(params)}: run `mlops promote` first"
        )
    tags = dict(version.tags or {})
    run_id = tags.get(TAG_RUN_ID) or version.run_id
    md5 = tags.get(common.TAG_DATA_HASH) or _run_tag(client, run_id)
    return Identity(
        model=reg.model,
        version=str(version.version),
        run_id=run_id,
        data_md5=md5 or None,
        git_commit=tags.get(common.TAG_GIT_COMMIT),
    )


def _run_tag(client: Any, run_id: str | None) -> str | None:
    """Older versions: the training run's own tag (train writes both)."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).data.tags.get(common.TAG_DATA_HASH)
    except MlflowException as e:
        if lookups.absent(e):
            return None  # the run was deleted: no hash to find the split by
        raise lookups.failure(e, f"get_run({run_id!r})") from e


def fetch_split(root: Path, md5: str, dest: Path) -> str:
    """Copy the DVC object ``md5`` to ``dest``: local cache, else the remote.

    Returns where it came from; raises Missing when neither has it.
    """
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except Exception as e:
        raise Missing(f"{root} is not a DVC repository ({e})") from e
    with repo:
        local = repo.cache.local
        path = local.oid_to_path(md5)
        if local.fs.exists(path):
            shutil.copyfile(path, dest)
            return "the DVC cache"
        try:
            odb = repo.cloud.get_remote_odb(command="monitor")
            remote_path = odb.oid_to_path(md5)
            if not odb.fs.exists(remote_path):
                raise Missing(
                    f"the train split (md5 {md5}) is in neither the DVC cache nor "
                    f"the DVC remote {odb.path}: was `mlops push` run after training?"
                )
            odb.fs.get_file(remote_path, str(dest))
        except Missing:
            raise
        except Exception as e:
            raise Missing(f"the DVC remote could not be read: {e}") from e
        return f"the DVC remote {odb.path}"


def load_split(root: Path, ident: Identity) -> tuple[pd.DataFrame, str]:
    """The production version's train split, its bytes checked against the tag."""
    if not ident.data_md5:
        raise Missing(
            f"{ident.model} version {ident.version} records no data hash "
            f"({common.TAG_DATA_HASH}): its training data cannot be found"
        )
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "train.parquet"
        where = fetch_split(root, ident.data_md5, dest)
        got = common.file_md5(dest)
        if got != ident.data_md5:
            raise Missing(
                f"the object fetched from {where} has md5 {got}, not "
                f"{ident.data_md5}: the cache or remote is corrupt"
            )
        return common.read_parquet(dest), where


def model_inputs(ident: Identity) -> list[str] | None:
    """The column names of the version's signature, which are what its server
    takes and logs; None for a model logged without named columns.

    train leaves out the columns the preprocessor drops (identifiers and the
    like): their drift is no reason to retrain, and the log does not have them.
    """
    from mlflow.models import get_model_info

    uri = f"models:/{ident.model}/{ident.version}"
    try:
        signature = get_model_info(uri).signature
    except lookups.faults() as e:  # the registry failed: a failure, not a verdict
        raise lookups.failure(e, f"reading the signature of {uri}") from e
    if signature is None or not signature.inputs.has_input_names():
        return None
    return [str(name) for name in signature.inputs.input_names()]


def features_of(
    ref: pd.DataFrame, target: str, inputs: list[str] | None
) -> pd.DataFrame:
    """The reference's feature columns: the model's inputs where it names them
    (in the reference's order), else every column but the target."""
    features = ref.drop(columns=[target], errors="ignore")
    if inputs is None:
        return features
    keep = set(inputs)
    return features[[c for c in features.columns if str(c) in keep]]


def load_model(params: Mapping[str, Any], ident: Identity) -> Any:
    """The production version's pipeline, its types checked against the
    project's allow-list (as every stage loads a model)."""
    import mlflow

    uri = f"models:/{ident.model}/{ident.version}"
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return modelfile.load_model_dir(local, common.project_allow(params))
