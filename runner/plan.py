"""The plan: the spec resolved into concrete stages, files and edges.

Every target (DVC, Argo, GitHub) is compiled from the plan, never from the
spec, so they cannot disagree about what runs, in which order, on what.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from runner import framework as fw
from runner import wiring
from runner.builtins import BUILTINS, Kind
from runner.errors import Problem, SpecError
from runner.spec import Spec, StageSpec

# Keys of params.yaml every built-in stage depends on: a change re-runs it.
PROJECT_PARAMS = ("project.seed", "project.target", "project.task")


@dataclass(frozen=True)
class PlannedStage:
    """One stage, with every file it reads and writes spelled out."""

    name: str
    uses: str | None
    cmd: str
    desc: str
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]  # cached by DVC and pushed to the remote
    metrics: tuple[str, ...]
    plots: tuple[str, ...]
    always_changed: bool
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    source: StageSpec | None = None

    def writes(self) -> tuple[str, ...]:
        return tuple(sorted({*self.outs, *self.metrics, *self.plots}))


@dataclass(frozen=True)
class Plan:
    spec: Spec
    stages: tuple[PlannedStage, ...]  # in a topological order, ties by name
    edges: frozenset[tuple[str, str]]  # (upstream, downstream)
    params: dict[str, Any]
    framework: fw.Framework = fw.TEMPLATE

    @cached_property
    def _by_name(self) -> dict[str, PlannedStage]:
        return {s.name: s for s in self.stages}

    @cached_property
    def _upstream(self) -> dict[str, list[str]]:
        # Indexed once: a target asks for every stage's upstream, and a scan
        # of the edges per stage made compiling quadratic in the stages.
        index: dict[str, list[str]] = {}
        for a, b in sorted(self.edges):
            index.setdefault(b, []).append(a)
        return index

    def stage(self, name: str) -> PlannedStage:
        return self._by_name[name]

    def upstream_of(self, name: str) -> list[str]:
        return list(self._upstream.get(name, ()))

    def downstream_closure(self, names: set[str]) -> set[str]:
        """The stages given and every stage that depends on them."""
        result = set(names)
        for stage in self.stages:  # topological order: one pass suffices
            if any(a in result for a in self.upstream_of(stage.name)):
                result.add(stage.name)
        return result


def _cmd(stage: StageSpec, framework: fw.Framework) -> str:
    if stage.uses is None:
        return stage.run or ""
    if framework.installed:
        # The console script: unlike `python -m`, it puts no folder of the
        # repository first on sys.path, so a team's own stages/ cannot
        # shadow the framework's package.
        return f"mlops stage {stage.uses} {stage.name}"
    return f"python -m stages.{stage.uses} {stage.name}"


def _code(uses: str, framework: fw.Framework) -> tuple[list[str], list[str]]:
    """How a built-in stage depends on its own code: (deps, params)."""
    if framework.installed:
        # Installed code has no path in the repository: its digest in
        # params.yaml stands for it.
        return [], [f"{fw.PARAMS_KEY}.{fw.DIGESTS_KEY}.{uses}"]
    return list(BUILTINS[uses].modules), []


def _builtin_files(
    stage: StageSpec,
    spec: Spec,
    needs: dict[str, tuple[str, ...]],
    framework: fw.Framework,
) -> dict[str, Any]:
    uses = stage.uses or ""
    kinds = {s.name: s.uses for s in spec.stages}
    inputs, _ = wiring.resolve_inputs(stage.name, uses, needs, kinds)
    outputs = wiring.output_paths(stage.name, uses)
    by_kind: dict[Kind, list[str]] = {k: [] for k in Kind}
    for path, out in outputs.values():
        by_kind[out.kind].append(path)
    code_deps, code_params = _code(uses, framework)
    deps = [*code_deps, *inputs.values()]
    params = [f"stages.{stage.name}", *PROJECT_PARAMS, *code_params]
    source = spec.data.get(stage.settings.get("source", "")) or {}
    if uses == "ingest":
        params.append(f"data.{stage.settings['source']}")
        if "path" in source:
            deps.append(source["path"])
        # Appended files are read like the source: a change to one re-ingests.
        deps.extend(source.get("append", ()))
    if uses == "evaluate":
        params.append("gates")
    if uses in ("evaluate", "register"):
        params.append("registry")
    return {
        "deps": deps,
        "params": params,
        "outs": by_kind[Kind.OUT],
        "metrics": by_kind[Kind.METRIC],
        "plots": by_kind[Kind.PLOTS],
        "inputs": dict(sorted(inputs.items())),
        "outputs": {role: path for role, (path, _) in sorted(outputs.items())},
        "always_changed": "url" in source or "sql" in source,
    }


def _custom_files(stage: StageSpec) -> dict[str, Any]:
    return {
        "deps": list(stage.deps),
        "params": [f"stages.{stage.name}"] if stage.settings else [],
        "outs": list(stage.outs),
        "metrics": list(stage.metrics),
        "plots": list(stage.plots),
        "inputs": {},
        "outputs": {},
        "always_changed": False,
    }


class _Owners:
    """Which stage writes a path, or a folder around it, or a file inside it.

    The first writer (in the writers' order) that is the path, a folder
    holding it, or a file inside it: found by lookups of the path's folders
    and of the folders of every output, not by a scan of every output per
    dependency (which made planning quadratic in the stages).
    """

    def __init__(self, writers: dict[str, str]) -> None:
        self._stage = list(writers.values())
        self._at = {out: i for i, out in enumerate(writers)}
        self._inside: dict[str, int] = {}  # folder -> first output inside it
        for i, out in enumerate(writers):
            for folder in wiring.folders(out):
                self._inside.setdefault(folder, i)

    def of(self, path: str) -> str | None:
        found = [self._at.get(p) for p in (path, *wiring.folders(path))]
        found.append(self._inside.get(path))
        first = min((i for i in found if i is not None), default=None)
        return None if first is None else self._stage[first]


def _order(names: list[str], edges: set[tuple[str, str]]) -> list[str]:
    indegree = {n: 0 for n in names}
    downstream: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        indegree[b] += 1
        downstream.setdefault(a, []).append(b)
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for b in downstream.get(n, ()):
            indegree[b] -= 1
            if indegree[b] == 0:
                heapq.heappush(ready, b)
    return order


def _params(
    spec: Spec, stages: list[PlannedStage], framework: fw.Framework
) -> dict[str, Any]:
    used_sources = sorted(
        {s.source.settings["source"] for s in stages if s.source and s.uses == "ingest"}
    )
    p = spec.project
    params: dict[str, Any] = {
        "project": {"name": p.name, "task": p.task, "target": p.target, "seed": p.seed},
        "tracking": {
            "uri": spec.storage.tracking_uri,
            "experiment": spec.storage.experiment,
        },
        "registry": dict(sorted(spec.registry.items())),
        "gates": [dict(g) for g in spec.gates],
        "data": {name: spec.data[name] for name in used_sources},
        "stages": {
            s.name: {
                "uses": s.uses or "run",
                "with": s.source.settings if s.source else {},
                "inputs": s.inputs,
                "outputs": s.outputs,
            }
            for s in sorted(stages, key=lambda s: s.name)
            if s.uses or (s.source and s.source.settings)
        },
    }
    if framework.installed:
        kinds = sorted({s.uses for s in stages if s.uses})
        params[fw.PARAMS_KEY] = {
            fw.VERSION_KEY: framework.version,
            fw.DIGESTS_KEY: {k: framework.digests[k] for k in kinds},
        }
    return params


def build(spec: Spec, framework: fw.Framework = fw.TEMPLATE) -> Plan:
    """Resolve a checked spec into a plan, for a repository in framework's mode."""
    needs = {s.name: s.needs for s in spec.stages}
    files = {
        s.name: _builtin_files(s, spec, needs, framework)
        if s.uses
        else _custom_files(s)
        for s in spec.stages
    }
    writers = {
        path: name
        for name, f in files.items()
        for key in ("outs", "metrics", "plots")
        for path in f[key]
    }
    # DVC orders stages by their files alone, so a `need` whose outputs the
    # stage does not already read becomes a dependency on them: that is what
    # makes "train after validate" real, and a failed validation stop
    # everything after it. Its verdict (its metrics) is enough when it has
    # one; a report that differs byte for byte on every run (the deepchecks
    # HTML) would otherwise rerun everything downstream and keep it from ever
    # being restored from the run-cache on another machine.
    for s in spec.stages:
        reads = set(files[s.name]["inputs"].values())
        for need in s.needs:
            f = files[need]
            written = [*f["outs"], *f["metrics"], *f["plots"]]
            if not reads.intersection(written):
                files[s.name]["deps"] += f["metrics"] or written
    owners = _Owners(writers)
    edges = {
        (owner, name)
        for name, f in files.items()
        for dep in f["deps"]
        if (owner := owners.of(dep)) is not None and owner != name
    }
    planned = {
        s.name: PlannedStage(
            name=s.name,
            uses=s.uses,
            cmd=_cmd(s, framework),
            desc=s.desc,
            deps=tuple(sorted(set(files[s.name]["deps"]))),
            params=tuple(files[s.name]["params"]),
            outs=tuple(sorted(files[s.name]["outs"])),
            metrics=tuple(sorted(files[s.name]["metrics"])),
            plots=tuple(sorted(files[s.name]["plots"])),
            always_changed=files[s.name]["always_changed"],
            inputs=files[s.name]["inputs"],
            outputs=files[s.name]["outputs"],
            source=s,
        )
        for s in spec.stages
    }
    order = _order(sorted(planned), edges)
    if len(order) < len(planned):
        stuck = ", ".join(sorted(set(planned) - set(order)))
        raise SpecError(
            spec.filename,
            [
                Problem(
                    1,
                    1,
                    ("pipeline",),
                    f"stages {stuck} form a cycle through "
                    "the files they read and write",
                )
            ],
        )
    ordered = [planned[n] for n in order]
    return Plan(
        spec=spec,
        stages=tuple(ordered),
        edges=frozenset(edges),
        params=_params(spec, ordered, framework),
        framework=framework,
    )
