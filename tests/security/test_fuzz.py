"""Fuzz the loader and the checks: whatever the input, the only exception that
escapes is SpecError, the project's own (never KeyError, TypeError, a PyYAML
error or RecursionError).

Three shapes of input: YAML-shaped trees made from the schema's own words,
the full spec with random edits (so the cross-field checks see near-valid
specs and run), and raw bytes (random, and the full spec's bytes mutated).
The example counts are bounded so that the whole file runs in a few seconds.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import spec as specs
from runner import yamlsource
from runner.errors import SpecError
from runner.schema import schema

FULL = Path(__file__).with_name("full.yaml")
# Examples tried per test, for its row of the reliability table.
TRIED: Counter[str] = Counter()


def _tried(figure: Any, test: str, case: str) -> None:
    TRIED[test] += 1
    figure("bad input", case, "only SpecError escaped", examples=TRIED[test])


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        # `figure` only records this test's row: it holds no state between examples.
        HealthCheck.function_scoped_fixture,
    ],
)


def _schema_words() -> list[str]:
    """Every property name and enum value in the schema: keys a fuzzer would
    not guess, which reach the deeper rules."""
    words: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            words.update(k for k in node.get("properties", {}))
            words.update(v for v in node.get("enum", []) if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema())
    return sorted(words)


WORDS = _schema_words()
KEYS = st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
    st.just("../../etc/passwd"),
    st.just("sklearn.ensemble.RandomForestClassifier"),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)
    ),
    max_leaves=25,
)


def _must_be_spec_error(text: str) -> None:
    try:
        specs.parse(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems, "a SpecError names at least one problem"
        for line in exc.lines():
            assert line.startswith("fuzz.yaml:"), line


@FUZZ
@given(st.fixed_dictionaries({"version": st.just(1)}, optional={
    "project": TREES, "pipeline": TREES, "data": TREES, "gates": TREES,
    "deploy": TREES, "monitoring": TREES, "argo": TREES, "ci": TREES,
    "storage": TREES, "registry": TREES,
}))  # fmt: skip
def test_trees_from_the_schemas_words(figure: Any, tree: dict[str, Any]) -> None:
    _tried(
        figure,
        "test_trees_from_the_schemas_words",
        "fuzz: YAML trees of the schema's own words",
    )
    _must_be_spec_error(yaml.safe_dump(tree, allow_unicode=True))


@FUZZ
@given(TREES)
def test_any_yaml_document(figure: Any, tree: Any) -> None:
    _tried(figure, "test_any_yaml_document", "fuzz: any YAML document")
    _must_be_spec_error(yaml.safe_dump(tree, allow_unicode=True))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*path, i))
    return found


BASE = yaml.safe_load(FULL.read_text())
BASE_PATHS = [p for p in _paths(BASE) if p]
EDIT = st.tuples(
    st.sampled_from(BASE_PATHS),
    st.sampled_from(["replace", "delete", "add", "rename"]),
    TREES,
    KEYS,
)


def _edit(tree: Any, edit: tuple[tuple[Any, ...], str, Any, str]) -> None:
    path, kind, value, key = edit
    parent = tree
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier edit removed the way there
    last = path[-1]
    if not isinstance(parent, dict | list):
        return
    if isinstance(parent, list) and not (isinstance(last, int) and last < len(parent)):
        return
    if isinstance(parent, dict) and last not in parent:
        return
    if kind == "replace":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif kind == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    elif kind == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)


@FUZZ
@given(st.lists(EDIT, min_size=1, max_size=4))
def test_the_full_spec_edited(figure: Any, edits: list[tuple[Any, ...]]) -> None:
    _tried(
        figure, "test_the_full_spec_edited", "fuzz: the full spec, edited near-valid"
    )
    """Near-valid specs reach the cross-field checks, with odd values in
    places the schema leaves open (`with` of a `run` stage, params)."""
    tree = copy.deepcopy(BASE)
    for edit in edits:
        _edit(tree, edit)  # type: ignore[arg-type]
    _must_be_spec_error(yaml.safe_dump(tree, allow_unicode=True))


def _must_be_spec_error_bytes(data: bytes) -> None:
    try:
        specs.from_document(yamlsource.load_bytes(data, "fuzz.yaml"))
    except SpecError as exc:
        assert exc.problems
        for line in exc.lines():
            assert line.startswith("fuzz.yaml:"), line
            assert "\0" not in line and "\x1b" not in line, "printed as sent"


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(figure: Any, data: bytes) -> None:
    _tried(figure, "test_random_bytes", "fuzz: random bytes")
    _must_be_spec_error_bytes(data)


FULL_BYTES = FULL.read_bytes()


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(FULL_BYTES) - 1),
            st.sampled_from(["flip", "insert", "delete"]),
            st.binary(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_full_spec_with_bytes_broken(
    figure: Any, edits: list[tuple[int, str, bytes]]
) -> None:
    _tried(
        figure,
        "test_the_full_spec_with_bytes_broken",
        "fuzz: the full spec's bytes flipped, inserted, deleted",
    )
    data = bytearray(FULL_BYTES)
    for where, kind, chunk in edits:
        at = min(where, len(data) - 1)
        if kind == "flip":
            data[at] ^= chunk[0] or 1
        elif kind == "insert":
            data[at:at] = chunk
        else:
            del data[at : at + len(chunk)]
    _must_be_spec_error_bytes(bytes(data))


def test_the_base_is_valid() -> None:
    """The edits start from a spec that passes every check."""
    assert specs.load(FULL).project.name == "full"
    assert json.dumps(BASE)  # plain data, as the edits assume


@FUZZ
@given(
    st.lists(
        st.sampled_from(["[", "{a: ", "- ", "b:\n  ", "&x [", "*x, ["]), min_size=1
    ),
    st.integers(1, 3000),
)
def test_deep_nesting(figure: Any, openers: list[str], depth: int) -> None:
    _tried(figure, "test_deep_nesting", "fuzz: nesting up to 3,000 deep, any style")
    """PyYAML's composer recurses once per level: deep input must be refused
    before Python's recursion limit, at any depth and in any style."""
    text = "version: 1\nproject: " + "".join(
        openers[i % len(openers)] for i in range(depth)
    )
    _must_be_spec_error(text)
