"""The compiler's indexes answer exactly what the scans they replaced did.

Planning and checking used to compare every path with every output (quadratic
in the stages: 53 s to compile 5,000 custom stages, issue 13). The lookups
that replaced those scans must give the same owner, the same overlapping
pairs in the same order, and the same topological order, for any paths,
including ones a checked spec would refuse (overlaps, duplicates).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import checks, wiring, yamlsource
from runner import plan as planner
from runner.errors import SpecError

# Short segments over few letters, so that paths often share folders.
SEGMENT = st.sampled_from(["a", "b", "ab", "", "."])
PATH = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)


def _owner_by_scan(path: str, writers: dict[str, str]) -> str | None:
    for out, stage in writers.items():
        if path == out or path.startswith(out + "/") or out.startswith(path + "/"):
            return stage
    return None


def _pairs_by_scan(paths: list[str]) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, a in enumerate(paths)
        for j, b in enumerate(paths)
        if j > i and (a == b or a.startswith(b + "/") or b.startswith(a + "/"))
    ]


def _order_by_scan(names: list[str], edges: set[tuple[str, str]]) -> list[str]:
    indegree = {n: 0 for n in names}
    for _, b in edges:
        indegree[b] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for a, b in sorted(edges):
            if a == n:
                indegree[b] -= 1
                if indegree[b] == 0:
                    heapq.heappush(ready, b)
    return order


def test_folders_are_every_prefix_before_a_slash() -> None:
    assert list(wiring.folders("a/b/c.txt")) == ["a", "a/b"]
    assert list(wiring.folders("a//b")) == ["a", "a/"]
    assert list(wiring.folders("file")) == []


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(PATH, st.sampled_from("xyz"), max_size=8), PATH)
def test_owner_lookup_matches_a_scan_of_every_output(
    writers: dict[str, str], path: str
) -> None:
    assert planner._Owners(writers).of(path) == _owner_by_scan(path, writers)


@settings(max_examples=300, deadline=None)
@given(st.lists(PATH, max_size=10))
def test_overlapping_pairs_match_a_scan_of_every_pair(paths: list[str]) -> None:
    assert list(checks._overlapping_pairs(paths)) == _pairs_by_scan(paths)


@settings(max_examples=300, deadline=None)
@given(st.sets(st.tuples(st.sampled_from("abcdef"), st.sampled_from("abcdef"))))
def test_topological_order_matches_the_scan(edges: set[tuple[str, str]]) -> None:
    names = sorted({n for edge in edges for n in edge} | {"g"})
    assert planner._order(names, edges) == _order_by_scan(names, edges)


# -- the loader: libyaml's parser under PyYAML's composer ----------------------

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted(
    [
        ROOT / "mlops.yaml",
        *ROOT.glob("examples/*/mlops.yaml"),
        *ROOT.glob("tests/golden/*/mlops.yaml"),
        *ROOT.glob("tests/invalid/*.yaml"),
        *ROOT.glob("tests/security/*.yaml"),
    ]
)


def _outcome(text: str, compose: Callable[[str], yaml.Node | None]) -> object:
    """What yamlsource.load makes of text with a given composer: the data
    and every position, or the exact problems it reports."""
    with mock.patch.object(yamlsource, "_compose", lambda t, f: compose(t)):
        try:
            doc = yamlsource.load(text, "mlops.yaml")
        except SpecError as exc:
            return [str(p) for p in exc.problems]
    return (repr(doc.data), doc.keys, doc.values)


def _by_python(text: str) -> yaml.Node | None:
    return yamlsource._compose_with(text, "mlops.yaml", yamlsource._Loader)


_COMPOSE = yamlsource._compose  # libyaml first, the reference on a failure


def _as_loaded(text: str) -> yaml.Node | None:
    return _COMPOSE(text, "mlops.yaml")


def _same_as_python(text: str) -> None:
    assert _outcome(text, _as_loaded) == _outcome(text, _by_python)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_loader_reads_every_spec_as_the_python_loader(path: Path) -> None:
    _same_as_python(path.read_text(encoding="utf-8", errors="surrogateescape"))


def test_loader_reads_a_large_generated_spec_as_the_python_loader() -> None:
    stages = "".join(
        f"  s{i}: {{run: python x.py {i}, deps: [a{i // 2}], outs: [a{i}]}}\n"
        for i in range(300)
    )
    _same_as_python(f"version: 1\npipeline:\n{stages}")


# Fragments that move positions or change what YAML reads: non-ASCII and
# astral characters, CRLF and YAML 1.1's other line breaks, tabs, flow and
# block collections, quotes, anchors and aliases, tags, comments, documents.
FRAGMENT = st.sampled_from(
    [
        "a", "é", "✓", "\U0001f600", " ", "  ", "\t", "\n", "\r\n", "\x85", "\u2028",
        ":", ": ", "- ", "-", "#", " #c", "'", '"', "{", "}", "[", "]", ",", "?", "|",
        ">", "&x ", "*x", "!!str ", "!x ", "---", "...", "%YAML 1.1\n", "<<: ",
        "\\", "\ufeff", "1", "0o7", "~", "yes", "2026-01-01",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(FRAGMENT, max_size=30).map("".join))
def test_loader_agrees_on_any_text(text: str) -> None:
    _same_as_python(text)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=12,
    ),
    st.sampled_from([None, True, False]),
)
def test_loader_agrees_on_dumped_documents(data: object, flow: bool | None) -> None:
    _same_as_python(yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True))
