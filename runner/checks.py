"""Cross-field rules the schema cannot express, each a small named check.

Every check takes the built spec and the source document (for positions) and
returns problems; `run_all` collects them so the user sees all at once.
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runner import DEFAULT_SPEC, signatures, wiring
from runner.builtins import ARTIFACTS_DIR
from runner.errors import Problem, did_you_mean
from runner.yamlsource import Document
from stages import (
    CLASSIFICATION_METRICS,
    DVC_FILE,
    DVC_LOCK,
    PARAMS_FILE,
    REGRESSION_METRICS,
    allowed_prefixes,
    in_modules,
)

if TYPE_CHECKING:
    from runner.spec import Spec

# Paths the pipeline must never write: git and DVC's own state, and the spec.
RESERVED = (".git", ".dvc", DEFAULT_SPEC, DVC_FILE, DVC_LOCK, PARAMS_FILE)

Check = Callable[["Spec", Document], Iterator[Problem]]


def stage_references(spec: Spec, doc: Document) -> Iterator[Problem]:
    names = [s.name for s in spec.stages]
    for stage in spec.stages:
        for i, need in enumerate(stage.needs):
            if need == stage.name:
                yield doc.problem(
                    ("pipeline", stage.name, "needs", i), "a stage cannot need itself"
                )
            elif need not in names:
                yield doc.problem(
                    ("pipeline", stage.name, "needs", i),
                    f"unknown stage {need!r}{did_you_mean(need, names)} "
                    f"(stages are: {', '.join(names)})",
                )


def data_references(spec: Spec, doc: Document) -> Iterator[Problem]:
    sources = sorted(spec.data)
    listed = ", ".join(sources) or "none are defined under `data:`"
    for stage in spec.stages:
        source = stage.settings.get("source") if stage.uses == "ingest" else None
        if source is not None and source not in spec.data:
            yield doc.problem(
                ("pipeline", stage.name, "with", "source"),
                f"unknown data source {source!r}{did_you_mean(source, sources)} "
                f"(sources: {listed})",
            )
    current = spec.monitoring.get("current")
    if current is not None and current not in spec.data:
        yield doc.problem(
            ("monitoring", "current"),
            f"unknown data source {current!r}{did_you_mean(current, sources)} "
            f"(sources: {listed})",
        )
    for name, source in spec.data.items():
        given = [k for k in ("path", "url", "sql", "sklearn") if k in source]
        if len(given) != 1:
            yield doc.problem(
                ("data", name),
                "give exactly one of path, url, sql or sklearn"
                + (f" (found {', '.join(given)})" if given else ""),
            )


def acyclic(spec: Spec, doc: Document) -> Iterator[Problem]:
    needs = {s.name: [n for n in s.needs if n != s.name] for s in spec.stages}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> Iterator[Problem]:
        state[node] = 1
        for nxt in needs.get(node, ()):
            if nxt not in needs:
                continue
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    yield doc.problem(
                        ("pipeline", node, "needs"),
                        "stages form a cycle: " + " -> ".join(cycle),
                    )
            elif nxt not in state:
                yield from visit(nxt, [*path, nxt])
        state[node] = 2

    for name in needs:
        if name not in state:
            yield from visit(name, [name])


def inputs_resolve(spec: Spec, doc: Document) -> Iterator[Problem]:
    needs = {s.name: s.needs for s in spec.stages}
    kinds = {s.name: s.uses for s in spec.stages}
    for stage in spec.stages:
        if stage.uses is None:
            continue
        _, missing = wiring.resolve_inputs(stage.name, stage.uses, needs, kinds)
        for m in missing:
            makers = " or ".join(f"'{p}'" for p in wiring.providers(m.role))
            where = ("pipeline", stage.name, "needs" if stage.needs else "uses")
            yield doc.problem(
                where,
                f"'{stage.uses}' needs the {m.role!r} output of an upstream stage; "
                f"add a stage that uses {makers} to `needs`",
            )


def _normalise(path: str) -> str | None:
    """The path inside the repository, or None if it escapes it."""
    if path.startswith(("/", "~")) or (len(path) > 1 and path[1] == ":"):
        return None
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def _declared_paths(spec: Spec) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """(source path in the spec, file path, is it written by the stage)."""
    for stage in spec.stages:
        base: tuple[str | int, ...] = ("pipeline", stage.name)
        for key in ("deps", "outs", "metrics", "plots"):
            for i, p in enumerate(getattr(stage, key)):
                yield (*base, key, i), p, key != "deps"
        if stage.uses is not None:
            for p, _ in wiring.output_paths(stage.name, stage.uses).values():
                yield (*base, "uses"), p, True
    for name, source in spec.data.items():
        if "path" in source:
            yield ("data", name, "path"), source["path"], False
        for i, p in enumerate(source.get("append", ())):
            yield ("data", name, "append", i), p, False


def paths_stay_inside(spec: Spec, doc: Document) -> Iterator[Problem]:
    for where, path, writes in _declared_paths(spec):
        norm = _normalise(path)
        if norm is None:
            yield doc.problem(
                where,
                f"{path!r} is outside the repository; use a path relative to it",
                at_value=True,
            )
        elif writes and (
            norm == "." or any(norm == r or norm.startswith(r + "/") for r in RESERVED)
        ):
            yield doc.problem(
                where, f"{path!r} is reserved; stages cannot write it", at_value=True
            )


def _overlapping_pairs(paths: list[str]) -> Iterator[tuple[int, int]]:
    """(i, j), i < j, where paths i and j are equal or one holds the other.

    In the order of a scan of every pair, but from lookups of each path and
    its folders: comparing every pair made checking quadratic in the stages.
    """
    at: dict[str, list[int]] = {}
    inside: dict[str, list[int]] = {}  # folder -> the paths inside it
    for i, path in enumerate(paths):
        at.setdefault(path, []).append(i)
        for folder in wiring.folders(path):
            inside.setdefault(folder, []).append(i)
    for i, path in enumerate(paths):
        holders = (at.get(f, []) for f in wiring.folders(path))
        partners = {*at[path], *inside.get(path, []), *itertools.chain(*holders)}
        yield from ((i, j) for j in sorted(partners) if j > i)


def outputs_unique(spec: Spec, doc: Document) -> Iterator[Problem]:
    owners: list[tuple[str, str, tuple[str | int, ...]]] = []
    for where, path, writes in _declared_paths(spec):
        norm = _normalise(path)
        if writes and norm is not None:
            owners.append((norm, str(where[1]), where))
    for i, j in _overlapping_pairs([norm for norm, _, _ in owners]):
        (a, stage_a, where_a), (b, stage_b, where_b) = owners[i], owners[j]
        # Report at the later of the two, naming the earlier one.
        first, second = sorted(
            [(where_a, a, stage_a), (where_b, b, stage_b)],
            key=lambda w: (doc.where(w[0]).line, doc.where(w[0]).col),
        )
        if first[2] == second[2] and a == b:
            what = f"{a!r} is listed twice"
        elif a == b:
            what = f"{a!r} is also written by stage {first[2]!r}"
        else:
            what = f"{second[1]!r} overlaps {first[1]!r}, written by stage {first[2]!r}"
        yield doc.problem(
            second[0],
            f"{what}; every output must be written by exactly one stage",
            at_value=True,
        )


def custom_outputs_outside_artifacts(spec: Spec, doc: Document) -> Iterator[Problem]:
    builtin = {s.name for s in spec.stages if s.uses}
    builtin_outputs = [
        p
        for s in spec.stages
        if s.uses
        for p, _ in wiring.output_paths(s.name, s.uses).values()
    ]
    for where, path, writes in _declared_paths(spec):
        norm = _normalise(path) or ""
        parts = norm.split("/")
        overlaps = any(norm == o or norm.startswith(o + "/") for o in builtin_outputs)
        if (
            writes
            and not overlaps  # outputs_unique reports those
            and where[2] != "uses"
            and parts[0] == ARTIFACTS_DIR
            and len(parts) > 1
            and parts[1] in builtin
            and parts[1] != where[1]
        ):
            yield doc.problem(
                where,
                f"{path!r} is inside the folder of built-in stage {parts[1]!r}",
                at_value=True,
            )


def _allowed_modules(settings: dict[str, Any]) -> tuple[str, ...]:
    return allowed_prefixes(settings.get("allow"))


def estimators_allowed(spec: Spec, doc: Document) -> Iterator[Problem]:
    for stage in spec.stages:
        if stage.uses not in ("train", "tune"):
            continue
        estimator = stage.settings.get("estimator", "")
        allowed = _allowed_modules(stage.settings)
        if not in_modules(estimator, allowed):
            yield doc.problem(
                ("pipeline", stage.name, "with", "estimator"),
                f"{estimator!r} is not in an allowed module "
                f"({', '.join(allowed)}); add its module prefix to `with.allow`",
                at_value=True,
            )


# The key of each estimator-taking stage whose keys are the estimator's parameters.
PARAMETER_KEYS = {"train": "params", "tune": "space"}


def estimator_parameters_exist(spec: Spec, doc: Document) -> Iterator[Problem]:
    """A parameter the estimator's `__init__` does not take, read from its source.

    Only where the source says for sure (runner/signatures.py); otherwise the
    stage's own check at run time names it.
    """
    for stage in spec.stages:
        key = PARAMETER_KEYS.get(stage.uses or "")
        if key is None:
            continue
        given = stage.settings.get(key)
        estimator = stage.settings.get("estimator", "")
        if not given or not in_modules(estimator, _allowed_modules(stage.settings)):
            continue
        accepted = signatures.parameters(estimator)
        if accepted is None:
            continue
        short = estimator.rpartition(".")[2]
        for name in given:
            if name not in accepted:
                yield doc.problem(
                    ("pipeline", stage.name, "with", key, name),
                    f"{short} has no parameter {name!r}"
                    + (
                        did_you_mean(name, sorted(accepted))
                        or f"; its parameters are: {', '.join(sorted(accepted))}"
                    ),
                )


def metrics_fit_task(spec: Spec, doc: Document) -> Iterator[Problem]:
    wrong = (
        REGRESSION_METRICS
        if spec.project.task == "classification"
        else (CLASSIFICATION_METRICS)
    )
    for stage in spec.stages:
        if stage.uses == "evaluate":
            for i, m in enumerate(stage.settings.get("metrics", ())):
                if m in wrong:
                    yield doc.problem(
                        ("pipeline", stage.name, "with", "metrics", i),
                        f"{m!r} is not a {spec.project.task} metric",
                        at_value=True,
                    )
        if stage.uses == "preprocess":
            method = stage.settings.get("split", {}).get("method")
            if method == "stratified" and spec.project.task == "regression":
                yield doc.problem(
                    ("pipeline", stage.name, "with", "split", "method"),
                    "'stratified' needs classes; use 'random' or 'time' for regression",
                    at_value=True,
                )
            if method == "time" and "time_column" not in stage.settings["split"]:
                yield doc.problem(
                    ("pipeline", stage.name, "with", "split"),
                    "a 'time' split needs `time_column`",
                )


def gates_have_metrics(spec: Spec, doc: Document) -> Iterator[Problem]:
    evaluators = [s for s in spec.stages if s.uses == "evaluate"]
    if spec.gates and not evaluators:
        yield doc.problem(("gates",), "gates need a stage that uses 'evaluate'")
        return
    known = (
        CLASSIFICATION_METRICS
        if spec.project.task == "classification"
        else (REGRESSION_METRICS)
    )
    for ev in evaluators:
        if "metrics" in ev.settings:
            known = frozenset(ev.settings["metrics"])
    for i, gate in enumerate(spec.gates):
        if gate["metric"] not in known:
            yield doc.problem(
                ("gates", i, "metric"),
                f"{gate['metric']!r} is not computed by 'evaluate' "
                f"(it computes: {', '.join(sorted(known))})",
                at_value=True,
            )


# Written into generated files, these are read as expressions, not as data:
# `${{ }}` by GitHub, `{{ }}` by Argo (in any field of a manifest), `${ }` by
# DVC in dvc.yaml. No escape works in all three, so they are refused, the
# first that matches named.
EXPRESSION_SYNTAX = (
    ("${{", "GitHub Actions would evaluate it as an expression"),
    ("{{", "Argo would substitute it as an expression"),
    ("${", "DVC would read it as a variable of dvc.yaml"),
)
# Stage settings (`with`) and gates go to params.yaml only, which no tool
# interpolates: any text is fine there.
DATA_ONLY = ("with",)


def _strings(
    node: object, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """(path, text, is it a key) for every string in a raw spec tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str):
                yield (*path, key), key, True
            if path[:1] == ("gates",) or (
                len(path) == 2 and path[0] == "pipeline" and key in DATA_ONLY  # noqa: PLR2004
            ):
                continue
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))
    elif isinstance(node, str):
        yield path, node, False


def no_expression_syntax(spec: Spec, doc: Document) -> Iterator[Problem]:
    """Values reach dvc.yaml, the workflows and the Argo manifests as data only."""
    for path, text, is_key in _strings(doc.data, ()):
        found = next(
            ((syn, why) for syn, why in EXPRESSION_SYNTAX if syn in text), None
        )
        if found is None:
            continue
        syntax, reader = found
        own_command = len(path) == 3 and path[0] == "pipeline" and path[2] == "run"  # noqa: PLR2004
        if own_command and syntax == "${":
            continue  # the user's shell command, written to dvc.yaml as given
        yield doc.problem(
            path,
            f"{text!r} holds `{syntax}`: {reader}; write the "
            f"{'name' if is_key else 'value'} without it",
            at_value=not is_key,
        )


def serving_deployable(spec: Spec, doc: Document) -> Iterator[Problem]:
    """A cluster target's settings that would give useless manifests."""
    from runner.targets import serving_pod  # imports runner.spec, which imports us

    for path, message in serving_pod.problems(spec):
        yield doc.problem(path, message, at_value=path == ("registry", "model"))


# References, and the one check that follows them: when a name does not
# resolve, `inputs_resolve` would only repeat the same mistake in other words
# ("needs the 'data' output of an upstream stage"), so it waits for them.
# Every other check reads each stage, source and gate on its own (acyclic skips
# a need that names no stage), so it runs beside them and a spec's mistakes
# show in one run.
REFERENCE_CHECKS: tuple[Check, ...] = (stage_references, data_references)
CHECKS: tuple[Check, ...] = (
    acyclic,
    inputs_resolve,
    paths_stay_inside,
    outputs_unique,
    custom_outputs_outside_artifacts,
    estimators_allowed,
    estimator_parameters_exist,
    metrics_fit_task,
    gates_have_metrics,
    no_expression_syntax,
    serving_deployable,
)


FOLLOW_REFERENCES: tuple[Check, ...] = (inputs_resolve,)


def run_all(spec: Spec, doc: Document) -> list[Problem]:
    """Every cross-field problem in the spec."""
    found = [p for check in REFERENCE_CHECKS for p in check(spec, doc)]
    rest = [c for c in CHECKS if not (found and c in FOLLOW_REFERENCES)]
    return found + [p for check in rest for p in check(spec, doc)]
