"""Load mlops.yaml into frozen spec objects: read, validate, check, build."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from runner import DEFAULT_SPEC, checks, gcpause, yamlsource
from runner.errors import Problem, SpecError
from runner.schema import problems as schema_problems
from runner.schema import schema


def schema_default(definition: str, *keys: str) -> Any:
    """A default written in the schema, so that it is stated in one place:
    ``schema_default("with-tune", "trials")`` is ``$defs.with-tune``'s
    ``properties.trials.default``. stages.common.schema_default reads it too."""
    node = schema()["$defs"][definition]
    for key in keys:
        node = node["properties"][key]
        if "$ref" in node and "default" not in node:
            node = schema()["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node["default"]


@dataclass(frozen=True)
class Project:
    name: str
    task: str
    target: str
    seed: int
    description: str = ""


@dataclass(frozen=True)
class Storage:
    remote_name: str
    remote_url: str
    tracking_uri: str
    experiment: str


@dataclass(frozen=True)
class StageSpec:
    """One stage as written: a built-in (`uses`) or a command (`run`)."""

    name: str
    uses: str | None = None
    run: str | None = None
    desc: str = ""
    needs: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    timeout: int | None = None
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """A valid mlops.yaml, with the schema's defaults filled in."""

    filename: str
    project: Project
    storage: Storage
    data: dict[str, dict[str, Any]]
    stages: tuple[StageSpec, ...]
    gates: tuple[dict[str, Any], ...]
    registry: dict[str, str]
    deploy: dict[str, Any]
    monitoring: dict[str, Any]
    ci: dict[str, Any]
    argo: dict[str, Any]

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


def _with_defaults(definition: str, given: dict[str, Any]) -> dict[str, Any]:
    props = schema()["$defs"][definition]["properties"]
    merged = {k: p["default"] for k, p in props.items() if "default" in p}
    merged.update(given)
    return merged


def nested_defaults(
    definition: str, key: str, given: dict[str, Any] | None
) -> dict[str, Any]:
    """An object inside a definition, e.g. `deploy.replicas`, with the schema's
    defaults filled in: the object's own `default`, then each field's, then
    what the spec gives."""
    node = schema()["$defs"][definition]["properties"][key]
    merged = dict(node.get("default", {}))
    if "$ref" in node:
        node = {**schema()["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
    props = node.get("properties", {})
    merged.update({k: p["default"] for k, p in props.items() if "default" in p})
    merged.update(given or {})
    return merged


def _source(given: dict[str, Any]) -> dict[str, Any]:
    """A data source with the schema's defaults (a `sql` source's `url`)."""
    if "sql" not in given:
        return dict(given)
    sql = dict(given["sql"])  # the user's key order, then what the schema adds
    for key, value in nested_defaults("source", "sql", {}).items():
        sql.setdefault(key, value)
    return {**given, "sql": sql}


def build(doc: yamlsource.Document) -> Spec:
    """Turn a schema-valid document into spec objects."""
    raw = doc.data
    project = raw["project"]
    storage = raw.get("storage", {})
    remote = storage.get("remote", {})
    mlflow = storage.get("mlflow", {})
    registry = _with_defaults("registry", raw.get("registry", {}))
    registry.setdefault("model", project["name"])
    stages = tuple(
        StageSpec(
            name=name,
            uses=s.get("uses"),
            run=s.get("run"),
            desc=s.get("desc", ""),
            needs=tuple(s.get("needs", ())),
            settings=dict(s.get("with", {})),
            deps=tuple(s.get("deps", ())),
            outs=tuple(s.get("outs", ())),
            metrics=tuple(s.get("metrics", ())),
            plots=tuple(s.get("plots", ())),
            resources=dict(s.get("resources", {})),
            retries=s.get("retries"),
            timeout=s.get("timeout"),
            secrets=dict(s.get("secrets", {})),
        )
        for name, s in raw["pipeline"].items()
    )
    return Spec(
        filename=doc.filename,
        project=Project(
            name=project["name"],
            task=project["task"],
            target=project["target"],
            seed=project.get("seed", schema_default("project", "seed")),
            description=project.get("description", ""),
        ),
        storage=Storage(
            remote_name=remote.get("name", schema_default("storage", "remote", "name")),
            remote_url=remote.get("url", schema_default("storage", "remote", "url")),
            tracking_uri=mlflow.get(
                "tracking_uri", schema_default("storage", "mlflow", "tracking_uri")
            ),
            experiment=mlflow.get("experiment", project["name"]),
        ),
        data={name: _source(src) for name, src in raw.get("data", {}).items()},
        stages=stages,
        gates=tuple(raw.get("gates", ())),
        registry=registry,
        deploy=_with_defaults("deploy", raw.get("deploy", {})),
        monitoring=_with_defaults("monitoring", raw.get("monitoring", {})),
        ci=_with_defaults("ci", raw.get("ci", {})),
        argo=_with_defaults("argo", raw.get("argo", {})),
    )


def parse(text: str, filename: str = DEFAULT_SPEC) -> Spec:
    """Validate a spec's text completely, or raise SpecError listing every problem."""
    return from_document(yamlsource.load(text, filename))


def from_document(doc: yamlsource.Document) -> Spec:
    """Validate a parsed spec completely, or raise SpecError listing every problem."""
    filename = doc.filename
    found: list[Problem] = schema_problems(doc)
    if not isinstance(doc.data, dict):
        raise SpecError(filename, found)
    if found:
        raise SpecError(filename, found)
    spec = build(doc)
    found = checks.run_all(spec, doc)
    if found:
        raise SpecError(filename, found)
    return spec


def load(path: str | FsPath = DEFAULT_SPEC) -> Spec:
    """Read and validate a spec file.

    The size is checked before anything is read, and at most one byte more
    than the limit is ever read, so a huge file (or a device) costs nothing.
    """
    path = FsPath(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > yamlsource.MAX_BYTES:
                data = b""
            else:
                data = f.read(yamlsource.MAX_BYTES + 1)
                size = max(size, len(data))
    except FileNotFoundError:
        raise SpecError(
            str(path),
            [
                Problem(
                    1,
                    1,
                    (),
                    "no such file; run this in a repository with an mlops.yaml",
                )
            ],
        ) from None
    except IsADirectoryError:
        raise SpecError(
            str(path), [Problem(1, 1, (), "is a directory, not a spec file")]
        ) from None
    if size > yamlsource.MAX_BYTES:
        # Refused by its size alone: none of it was read.
        raise yamlsource.too_big(str(path), size)
    with gcpause.paused():
        doc = yamlsource.load_bytes(data, str(path))
        return from_document(doc)
