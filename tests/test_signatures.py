"""Estimator parameters read from source agree with Python's, or say they don't know."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import signatures


def test_every_scikit_learn_estimator_is_read_right_or_not_at_all() -> None:
    from sklearn.utils import all_estimators

    read = 0
    for name, cls in all_estimators():
        public = ".".join(p for p in cls.__module__.split(".") if not p.startswith("_"))
        for dotted in (f"{public}.{name}", f"{cls.__module__}.{name}"):
            got = signatures.parameters(dotted)
            if got is None:
                continue
            module, _, attr = dotted.rpartition(".")
            assert getattr(importlib.import_module(module), attr) is cls, dotted
            assert got == frozenset(inspect.signature(cls).parameters), dotted
            read += 1
    # Nearly all are known; an inherited __init__ (RidgeCV, OAS) is the exception.
    assert read > 350


def test_the_examples_estimators_are_known() -> None:
    got = signatures.parameters("sklearn.ensemble.RandomForestClassifier")
    assert got is not None and {"n_estimators", "max_depth"} <= got


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "teamlib"
    (root / "models").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "models" / "__init__.py").write_text(
        "from ._trees import Deep as Tree\nfrom .. import helpers\n"
    )
    (root / "models" / "_trees.py").write_text(
        textwrap.dedent("""
            class Base:
                def __init__(self, depth=3, *, seed=None):
                    pass
            class Deep(Base):
                def __init__(self, depth=3, *, seed=None, width=2):
                    pass
            class Inherits(Base):
                pass
            class Open:
                def __init__(self, **kwargs):
                    pass
            """)
    )
    (root / "helpers.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        yield root
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.split(".")[0] == "teamlib"]:
            del sys.modules[name]


def test_a_re_export_under_another_name_is_followed(package: Path) -> None:
    assert signatures.parameters("teamlib.models.Tree") == {"depth", "seed", "width"}
    assert signatures.parameters("teamlib.models._trees.Base") == {"depth", "seed"}
    assert "teamlib" not in sys.modules  # read, never imported


@pytest.mark.parametrize(
    "dotted",
    [
        "teamlib.models._trees.Inherits",  # which __init__ applies is not read
        "teamlib.models._trees.Open",  # **kwargs takes anything
        "teamlib.models.Missing",
        "teamlib.nowhere.Tree",
        "no_such_package_anywhere.Tree",
        "Tree",
    ],
)
def test_what_the_source_does_not_say_is_unknown(package: Path, dotted: str) -> None:
    assert signatures.parameters(dotted) is None


def test_a_module_that_does_not_parse_is_unknown(package: Path) -> None:
    (package / "models" / "_trees.py").write_text("class Deep(:\n")
    signatures._parse.cache_clear()
    assert signatures.parameters("teamlib.models.Tree") is None
