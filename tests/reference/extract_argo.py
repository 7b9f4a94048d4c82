"""Copy what the tests need from Argo Workflows' schema.json and swagger.json.

    python tests/reference/extract_argo.py schema schema.json OUT.json
    python tests/reference/extract_argo.py swagger swagger.json OUT.json

`schema`: the definitions reachable from the kinds mlops writes (Workflow,
WorkflowTemplate, CronWorkflow). `swagger`: the operations `mlops submit`
sends and the definitions reachable from them. Either way only `description`
texts are dropped: every keyword that validates anything stays as published.
Run by hand, to refresh the copies from a new release; tests never run it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import Any

# extract_crd.py lies beside this script: one description stripper for both.
from extract_crd import strip_descriptions

from runner import argo_submit

DEFINITIONS = "#/definitions/"
KINDS = ("Workflow", "WorkflowTemplate", "CronWorkflow")
# (method, path) of every request `mlops submit` makes.
OPERATIONS = (
    ("post", argo_submit.TEMPLATES),
    ("get", argo_submit.TEMPLATE),
    ("put", argo_submit.TEMPLATE),
    ("post", argo_submit.WORKFLOWS),
)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable(definitions: dict[str, Any], roots: Iterable[str]) -> dict[str, Any]:
    """The definitions the roots refer to, directly or through one another."""
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().removeprefix(DEFINITIONS)
        if name not in kept:
            kept[name] = strip_descriptions(definitions[name])
            todo += _refs(definitions[name])
    return kept


def schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema's definitions of the kinds mlops writes."""
    roots = [f"{DEFINITIONS}io.argoproj.workflow.v1alpha1.{k}" for k in KINDS]
    return {
        "$schema": doc["$schema"],
        "definitions": _reachable(doc["definitions"], roots),
    }


def swagger(doc: dict[str, Any]) -> dict[str, Any]:
    """The Server API's operations that `mlops submit` calls."""
    paths: dict[str, Any] = {}
    for method, path in OPERATIONS:
        paths.setdefault(path, {})[method] = strip_descriptions(
            doc["paths"][path][method]
        )
    return {
        "swagger": doc["swagger"],
        "paths": paths,
        "definitions": _reachable(doc["definitions"], _refs(paths)),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["schema", "swagger"])
    p.add_argument("source")
    p.add_argument("out")
    args = p.parse_args()
    with open(args.source, encoding="utf-8") as f:
        doc = json.load(f)
    extract = schema(doc) if args.kind == "schema" else swagger(doc)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(extract, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
