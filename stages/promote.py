"""Promote: move the production alias to this commit's model when the gates pass.

The candidate is the version this checkout's pipeline registered, as the
register stage recorded it (``artifacts/<stage>/registered.json``), so main
promotes exactly the model its pull request's report showed, even when another
pull request has moved ``registry.candidate_alias`` since. It and the current
production model (``registry.production_alias``, possibly none) are scored on
the same held-out split, the evaluate stage's ``inputs.test``, and the gates
of ``params.yaml`` are applied. Only then is the production alias moved, by
one ``set_registered_model_alias`` call: a failure before it leaves
production where it was. Every decision is written to the audit trail (see
:mod:`stages.audit`), and a promotion tags HEAD ``<model>@v<version>``.

Run as ``python -m stages.promote`` from the repository root (``mlops promote``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import audit, common, evaluate, lookups, register, run_then_leave
from stages.lookups import by_alias
from stages.register import TAG_GATES, TAG_RUN_ID

KIND = "promote"


@dataclass(frozen=True)
class Registry:
    """The registered model's name and the alias promotion moves."""

    model: str
    production: str


def registry(params: Mapping[str, Any]) -> Registry:
    """Names from ``params.yaml``'s registry block, with the schema's defaults."""
    reg = params.get("registry") or {}
    return Registry(
        model=str(reg.get("model") or common.project(params)["name"]),
        production=str(reg.get("production_alias") or "production"),
    )


def evaluate_spec(params: Mapping[str, Any]) -> dict[str, Any]:
    """The first evaluate stage: it names the held-out split and the metrics."""
    return _first_stage(params, evaluate.KIND, "promotion needs its held-out split")


def _first_stage(params: Mapping[str, Any], kind: str, why: str) -> dict[str, Any]:
    for stage_id, raw in (params.get("stages") or {}).items():
        if (raw or {}).get("uses") == kind:
            return common.stage_spec(params, stage_id, kind)
    raise common.StageError(f"no '{kind}' stage in params.yaml: {why}")


def metric_names(params: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """The evaluate stage's metrics plus any metric a gate needs."""
    task = common.project(params)["task"]
    names = list(spec["with"].get("metrics") or common.DEFAULT_METRICS[task])
    for gate in params.get("gates") or []:
        if gate.get("metric") not in names:
            names.append(str(gate.get("metric")))
    return names


def tag_verdicts(tags: Mapping[str, str]) -> dict[str, Any]:
    """Gate verdicts as the register stage recorded them on a version's tags."""
    gates = []
    for key, value in sorted(tags.items()):
        parts = key.split(".")
        if parts[0] == "gate" and len(parts) == 3:  # noqa: PLR2004
            gates.append(
                {"metric": parts[1], "rule": parts[2], "passed": value == "pass"}
            )
    return {"passed": tags.get(TAG_GATES) == "true", "gates": gates}


def tag_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    """The test metrics the register stage wrote as ``metric.<name>`` tags."""
    prefix = "metric."
    return {
        k.removeprefix(prefix): float(v)
        for k, v in tags.items()
        if k.startswith(prefix)
    }


def _run_params(client: Any, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    return dict(client.get_run(run_id).data.params)


def tagged(name: str) -> bool:
    """Whether this repository has the tag ``name`` (False outside git)."""
    git = shutil.which("git")
    if git is None:
        return False
    out = subprocess.run(
        [git, "rev-parse", "-q", "--verify", f"refs/tags/{name}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.returncode == 0


def git_tag(name: str, changes: str | None = None) -> str:
    """Tag HEAD (GTO's ``<model>@v<version>`` convention); say what happened.

    ``changes`` names uncommitted changes to the files behind the model: HEAD
    alone would not make it, so it is not tagged with it.
    """
    if changes:
        return (
            f"no git tag {name}: uncommitted changes to {changes}, so HEAD alone "
            "would not make this model; commit them, run again and promote"
        )
    git = shutil.which("git")
    if git is None or common.git_commit() is None:
        return f"no git tag {name}: not in a git repository with a commit"
    out = subprocess.run(
        [git, "tag", name, "HEAD"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return f"no git tag {name}: {out.stderr.strip() or 'git tag failed'}"
    return f"tagged HEAD {name} (push it with `git push origin {name}`)"


def _refuse(client: Any, entry: dict[str, Any], when: Any, message: str) -> int:
    audit.record(client, when, entry)
    common.warn(KIND, message)
    common.warn(KIND, f"production stays at {_v(entry['previous'])}")
    return 1


def _v(version: str | None) -> str:
    return f"version {version}" if version else "no model"


def _refuse_as_registered(
    client: Any, reg: Registry, version: Any, previous: str | None, reason: str
) -> int:
    """Refuse a version on what its tags say, without scoring it again."""
    tags = dict(version.tags or {})
    when = audit.now_utc()
    entry = audit.build_entry(
        when=when,
        outcome=audit.REFUSED,
        reason=reason,
        model=reg.model,
        version=str(version.version),
        previous=previous,
        version_tags=tags,
        params=_run_params(client, tags.get(TAG_RUN_ID)),
        metrics={"candidate": tag_metrics(tags), "production": None},
        verdicts=tag_verdicts(tags),
    )
    return _refuse(client, entry, when, f"refused: {reason}")


def _gates_failed(
    client: Any, reg: Registry, version: Any, previous: str | None, source: str
) -> int:
    """This commit's version failed its gates when it was registered: refuse it."""
    verdicts = tag_verdicts(dict(version.tags or {}))
    failed = [
        f"{g['metric']}.{g['rule']}" for g in verdicts["gates"] if not g["passed"]
    ]
    return _refuse_as_registered(
        client, reg, version, previous,
        f"version {version.version}, registered by this commit's run ({source}), "
        f"failed its gates ({', '.join(failed) or 'see its tags'})",
    )  # fmt: skip


def _rolled_back(
    client: Any, reg: Registry, version: Any, previous: str | None, rollback: Any
) -> int:
    """Production was rolled back off this version: merging more code that
    leaves the model unchanged must not put it back."""
    return _refuse_as_registered(
        client, reg, version, previous,
        f"version {version.version} was rolled back from production at "
        f"{rollback.get('time')} by {rollback.get('actor')}; a change that trains "
        "a new version is needed to promote again",
    )  # fmt: skip


def registered(params: Mapping[str, Any]) -> tuple[str, Any]:
    """The register stage's record in this checkout: the version its run made."""
    spec = _first_stage(
        params, register.KIND, "promotion promotes the version that stage registers"
    )
    path = str(common.need(spec, "outputs", "registered"))
    if not Path(path).is_file():
        raise common.StageError(
            f"{path} is missing: run `mlops run` first (CI runs `mlops run --pull`, "
            "which restores it from the run-cache); promote takes the model "
            "version this commit's pipeline registered"
        )
    return path, common.read_json(Path(path))


def commit_version(
    client: Any, reg: Registry, source: str, record: Any, uri: str
) -> Any:
    """The registry's copy of the version the record names, checked to be it."""
    from mlflow.exceptions import MlflowException

    if record.get("model") != reg.model:
        raise common.StageError(
            f"{source} names model {record.get('model')!r}, but the registry model "
            f"is {reg.model!r}: run `mlops run` again"
        )
    number = str(record.get("version"))
    try:
        version = client.get_model_version(reg.model, number)
    except MlflowException as e:
        if not lookups.absent(e):
            raise lookups.failure(
                e, f"get_model_version({reg.model!r}, {number!r})"
            ) from e
        raise common.StageError(
            f"{reg.model} version {number} ({source}) is not in the registry at "
            f"{uri}: it was registered in another MLflow store. "
            "CI needs a shared tracking server (MLFLOW_TRACKING_URI in ci.secrets)"
        ) from e
    run_id = (version.tags or {}).get(TAG_RUN_ID)
    if run_id != record.get("run_id"):
        raise common.StageError(
            f"{reg.model} version {number} in the registry comes from run {run_id}, "
            f"but {source} says run {record.get('run_id')}: the registry was reset "
            "or shared with another project; run `mlops run --force`"
        )
    return version


def score_and_gate(
    params: Mapping[str, Any], model: str, version: str, previous: str | None
) -> tuple[dict[str, float], dict[str, float] | None, dict[str, Any]]:
    """Score both versions on the held-out split and apply the gates."""
    spec = evaluate_spec(params)
    test = common.read_parquet(common.need(spec, "inputs", "test"))
    names = metric_names(params, spec)
    uri = f"models:/{model}/"
    cand = evaluate.version_metrics(params, uri + version, test, names)
    prod = (
        evaluate.version_metrics(params, uri + previous, test, names)
        if previous
        else None
    )
    verdicts = evaluate.check_gates(params.get("gates") or [], cand, lambda: prod)
    for g in verdicts["gates"]:
        common.say(KIND, f"gate {'PASS' if g['passed'] else 'FAIL'}: {g['detail']}")
    return cand, prod, verdicts


def move_alias(client: Any, reg: Registry, version: str, previous: str | None) -> None:
    """Point the production alias at ``version``, or fail saying where it is.

    A failed call may still have moved the alias (the server acted, its answer
    was lost), so the alias is read back before deciding what happened.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(reg.model, reg.production, version)
    except MlflowException as e:
        call = f"set_registered_model_alias({reg.model!r}, {reg.production!r})"
        error = lookups.failure(e, call)
        try:
            now = by_alias(client, reg.model, reg.production)
        except common.StageError as again:
            raise common.StageError(
                f"{error}; reading @{reg.production} back failed too, so it may "
                f"name version {version} or {_v(previous)}: check it before "
                f"promoting again ({again})"
            ) from e
        held = str(now.version) if now is not None else None
        if held != version:
            raise common.StageError(
                f"{error}; @{reg.production} names {_v(held)}, as before"
                if held == previous
                else f"{error}; @{reg.production} now names {_v(held)}"
            ) from e
        common.warn(
            KIND, f"{call} failed, but the alias names version {version}: it moved"
        )


def record_promotion(
    client: Any, reg: Registry, when: Any, entry: dict[str, Any], previous: str | None
) -> None:
    """Save the audit entry of a promotion whose alias moved, or undo the move.

    A promotion without its audit entry would serve a model nobody can trace,
    so when the registry does not take the entry (and reading it back shows it
    did not land), @production goes back to where it was and promote fails:
    nothing changed, and running it again is safe.
    """
    faults = lookups.faults()
    try:
        audit.store(client, when, entry)
    except faults as e:
        error = lookups.failure(
            e, f"set_registered_model_tag({reg.model!r}, {audit.tag_key(when)!r})"
        )
        try:
            landed = audit.stored(client, reg.model, when)
        except faults:
            landed = False  # cannot tell: undo, so that nothing is left unrecorded
        if not landed:
            _undo_promotion(client, reg, entry, previous, error)
        common.warn(KIND, f"{error}; but the registry holds the entry: it was saved")
    try:
        audit.append_log(entry)
    except OSError as e:
        raise common.StageError(
            f"promoted, and the audit entry {audit.tag_key(when)} is in the registry, "
            f"but {audit.LOG_FILE} could not be written: {e}"
        ) from e


def _undo_promotion(
    client: Any,
    reg: Registry,
    entry: dict[str, Any],
    previous: str | None,
    error: common.StageError,
) -> None:
    """Put @production back to ``previous`` (or remove it); always raises."""
    try:
        if previous is None:
            client.delete_registered_model_alias(reg.model, reg.production)
        else:
            client.set_registered_model_alias(reg.model, reg.production, previous)
    except lookups.faults() as again:
        # Neither the record nor the undo landed: keep the record in the CI log.
        sys.stderr.write(audit.encode(entry) + "\n")
        raise common.StageError(
            f"{error}; moving @{reg.production} back to {_v(previous)} failed too "
            f"({lookups.failure(again)}): it names {_v(entry['version'])} with no "
            "audit entry in the registry; the entry is the line above"
        ) from again
    raise common.StageError(
        f"{error}; the audit entry was not saved, so @{reg.production} was moved "
        f"back to {_v(previous)}: nothing changed, promote again once the registry "
        "answers"
    )


def promote(params: Mapping[str, Any], client: Any) -> int:
    """Score, gate and (only then) move the production alias; return the exit code.

    The version promoted is the one this checkout's pipeline registered (the
    register stage's record), not whichever version holds the candidate alias:
    another pull request may have moved that alias since.
    """
    reg = registry(params)
    source, record = registered(params)
    candidate = commit_version(client, reg, source, record, common.tracking_uri(params))
    production = by_alias(client, reg.model, reg.production)
    previous = str(production.version) if production is not None else None
    tag = f"{reg.model}@v{candidate.version}"
    if previous == str(candidate.version):
        common.say(
            KIND,
            f"{reg.model} version {previous}, registered by this commit, is already "
            f"@{reg.production}; nothing to promote",
        )
        if not tagged(tag) and common.git_changes(source) == []:
            # Promoted from a tree with changes, since committed: HEAD makes it.
            common.say(KIND, git_tag(tag))
        return 0
    if not record.get("gates_passed"):
        return _gates_failed(client, reg, candidate, previous, source)
    rollback = audit.rolled_back_from(
        audit.model_entries(client, reg.model), str(candidate.version)
    )
    if rollback is not None:
        return _rolled_back(client, reg, candidate, previous, rollback)
    cand_metrics, prod_metrics, verdicts = score_and_gate(
        params, reg.model, str(candidate.version), previous
    )
    when = audit.now_utc()
    tags = dict(candidate.tags or {})
    entry = audit.build_entry(
        when=when,
        outcome=audit.PROMOTED if verdicts["passed"] else audit.REFUSED,
        reason="all gates passed" if verdicts["passed"] else "gates failed",
        model=reg.model,
        version=str(candidate.version),
        previous=previous,
        version_tags=tags,
        params=_run_params(client, tags.get(TAG_RUN_ID) or candidate.run_id),
        metrics={"candidate": cand_metrics, "production": prod_metrics},
        verdicts=verdicts,
    )
    if not verdicts["passed"]:
        return _refuse(
            client, entry, when, f"refused {_v(entry['version'])}: gates failed"
        )
    if entry["train_changes"]:
        common.warn(
            KIND,
            f"version {candidate.version} was trained with uncommitted changes to "
            f"{entry['train_changes']} on top of commit {entry['train_commit']}",
        )
    changes = common.name_changes(common.git_changes(source) or [])
    # The one write that changes what serves; everything above may fail freely.
    move_alias(client, reg, str(candidate.version), previous)
    record_promotion(client, reg, when, entry, previous)
    common.say(
        KIND,
        f"promoted {reg.model} version {candidate.version} to @{reg.production} "
        f"(was {_v(previous)})",
    )
    common.say(KIND, f"audit entry {audit.tag_key(when)} and {audit.LOG_FILE}")
    common.say(KIND, git_tag(tag, changes))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Promote the candidate; exit 1 when there is none or the gates refuse it."""
    from stages import production

    ap = argparse.ArgumentParser(prog="python -m stages.promote")
    production.add_flag(ap)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow

        params = common.load_params()
        mlflow.set_tracking_uri(common.tracking_uri(params))
        client = mlflow.MlflowClient()
        code = lookups.guarded(promote)(params, client)
        return production.done(code, args.release_file, client, params)
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1


if __name__ == "__main__":
    run_then_leave(main)
