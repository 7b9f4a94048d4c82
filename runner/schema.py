"""Structural validation of a spec against schema/mlops.schema.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from runner.errors import Problem
from runner.framework import SCHEMA, packaged_file
from runner.yamlsource import Document

# In the wheel's runner/_data/, or schema/ of a checkout: one committed copy.
SCHEMA_PATH = packaged_file(SCHEMA)


@cache
def schema() -> dict[str, Any]:
    """The spec's JSON Schema, the one hand-written definition of mlops.yaml."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def _validator() -> Any:
    # jsonschema without its format checkers' libraries (1.5 s of imports).
    from runner import jsonschema_import

    jsonschema_import.load()
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def problems(doc: Document) -> list[Problem]:
    """Every schema violation in the document, each at its own line."""
    found: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        found.extend(_explain(doc, error))
    return found


def _leaves(error: Any) -> Iterator[Any]:
    """The most specific errors: descend into oneOf/anyOf/allOf/if-then branches."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Branches whose own keywords failed are the ones the user meant;
        # a branch that only failed `required` is an alternative not taken.
        deeper = [e for e in error.context if e.validator not in ("required", "not")]
        if deeper:
            best = max(deeper, key=lambda e: len(e.absolute_path))
            yield from _leaves(best)
            return
        yield error
        return
    yield error


def _explain(doc: Document, error: Any) -> list[Problem]:
    found = []
    for leaf in _leaves(error):
        path = tuple(leaf.absolute_path)
        found.extend(_describe(doc, path, leaf))
    return found


def _describe(doc: Document, path: tuple[Any, ...], e: Any) -> list[Problem]:  # noqa: PLR0911
    kind = e.validator
    value = e.instance
    if kind == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        extra = sorted(k for k in value if k not in e.schema.get("properties", {}))
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return [doc.problem((*path, k), f"unknown key{hint}") for k in extra]
    if kind == "required":
        missing = [k for k in e.validator_value if k not in value]
        return [
            doc.problem(path, f"missing required key {k!r}", at_value=True)
            for k in missing
        ]
    if "propertyNames" in e.absolute_schema_path:
        return [doc.problem((*path, value), _name_message(value))]
    if kind is None:
        return _forbidden(doc, path, value)
    if kind == "oneOf":
        titles = [s.get("title", "?") for s in e.validator_value]
        return [doc.problem(path, f"expected exactly one of: {'; '.join(titles)}")]
    if kind == "anyOf":
        titles = [s.get("title", "?") for s in e.validator_value]
        return [doc.problem(path, f"expected at least one of: {', '.join(titles)}")]
    if kind == "type" and not path:
        return [
            doc.problem(
                path, "expected a mapping with `version`, `project` and `pipeline`"
            )
        ]
    if kind == "type" and value is None:
        return [
            doc.problem(
                path,
                f"a value is needed: null is not of type {e.validator_value!r}",
                at_value=True,
            )
        ]
    if kind == "enum":
        options = ", ".join(json.dumps(o) for o in e.validator_value)
        return [doc.problem(path, f"{value!r} is not one of: {options}", at_value=True)]
    if kind == "pattern" and "title" in e.schema:
        # A pattern too dense to read as an error names what it stands for.
        title = e.schema["title"]
        return [doc.problem(path, f"{value!r} is not {title}", at_value=True)]
    if kind == "pattern":
        return [
            doc.problem(
                path, f"{value!r} does not match {e.validator_value}", at_value=True
            )
        ]
    return [doc.problem(path, e.message, at_value=True)]


def _name_message(name: Any) -> str:
    return (
        f"{name!r} is not a valid name: use lower-case letters, digits and '-', "
        "starting with a letter (at most 40 characters)"
    )


FILE_KEYS = ("deps", "outs", "metrics", "plots")


def _forbidden(doc: Document, path: tuple[Any, ...], value: Any) -> list[Problem]:
    """A key the schema forbids (`false`); jsonschema reports only its value."""
    parent: Any = doc.data
    for part in path:
        parent = parent[part]
    keys = (
        [k for k, v in parent.items() if v == value] if isinstance(parent, dict) else []
    )
    found = []
    for key in keys or [None]:
        where = (*path, key) if key is not None else path
        if key in FILE_KEYS:
            message = (
                f"only `run` stages declare {key}; a built-in stage's files "
                "follow from `uses`"
            )
        else:
            message = "is not allowed here"
        found.append(doc.problem(where, message))
    return found
