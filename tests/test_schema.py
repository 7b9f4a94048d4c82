"""The schema is the contract: complete, closed, documented and self-consistent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator

from runner.schema import schema
from tests.support import ROOT


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}/{i}")


def test_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_object_is_closed() -> None:
    for path, obj in _objects(schema()):
        if (
            "/if" in path
            or path.endswith("/then")
            or "/oneOf/" in path
            or "/anyOf/" in path
        ):
            continue  # conditional branches refine an object that is closed elsewhere
        if "properties" in obj:
            assert obj.get("additionalProperties") is False, path


def test_every_field_is_described() -> None:
    defs = schema()["$defs"]
    for path, obj in _objects(schema()):
        if "/if" in path or path.endswith("/then"):
            continue
        for name, prop in obj.get("properties", {}).items():
            target = prop
            if "$ref" in prop and "description" not in prop:
                target = defs[prop["$ref"].rsplit("/", 1)[1]]
            assert target.get("description"), f"{path}/properties/{name}"


def test_example_points_editors_at_the_schema() -> None:
    first = (ROOT / "mlops.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=schema/mlops.schema.json"


def test_the_metrics_enum_is_what_the_stages_compute() -> None:
    """The schema lists the metrics a spec may ask for; which task each one
    belongs to is said once, in stages/__init__.py: both name the same set."""
    from stages import CLASSIFICATION_METRICS, REGRESSION_METRICS
    from stages.common import DEFAULT_METRICS, LOWER_IS_BETTER

    enum = schema()["$defs"]["with-evaluate"]["properties"]["metrics"]["items"]["enum"]
    assert set(enum) == CLASSIFICATION_METRICS | REGRESSION_METRICS
    assert not CLASSIFICATION_METRICS & REGRESSION_METRICS
    assert set(DEFAULT_METRICS["classification"]) <= CLASSIFICATION_METRICS
    assert set(DEFAULT_METRICS["regression"]) <= REGRESSION_METRICS
    assert LOWER_IS_BETTER <= set(enum)
