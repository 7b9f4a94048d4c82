"""The order the suite's modules are handed to the workers (tests/conftest.py)."""

from __future__ import annotations

from collections import Counter

from tests.conftest import FIRST, module_order
from tests.support import ROOT


def test_every_module_named_first_exists_exactly_once() -> None:
    # A renamed module would silently fall back to collection order.
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert {name: names[name] for name in FIRST} == dict.fromkeys(FIRST, 1)
    assert len(set(FIRST)) == len(FIRST)


def test_first_comes_first_in_its_order_and_the_rest_keep_theirs() -> None:
    paths = [
        "tests/test_a.py",
        "tests/test_promote.py",
        "tests/sub/test_b.py",
        "tests/test_rehearsal.py",
    ]
    assert module_order(paths) == [
        "tests/test_rehearsal.py",
        "tests/test_promote.py",
        "tests/test_a.py",
        "tests/sub/test_b.py",
    ]
