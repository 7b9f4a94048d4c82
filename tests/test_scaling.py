"""The compiler's indexes answer exactly what the scans they replaced did.

Planning and checking used to compare every path with every output (quadratic
in the stages: 53 s to compile 5,000 custom stages, issue 13). The lookups
that replaced those scans must give the same owner, the same overlapping
pairs in the same order, and the same topological order, for any paths,
including ones a checked spec would refuse (overlaps, duplicates).
"""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from runner import checks, wiring
from runner import plan as planner

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
