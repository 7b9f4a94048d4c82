"""runner.write's fast path writes the bytes PyYAML's emitter writes.

render() walks the data itself (runner.blockyaml) and falls back to PyYAML
for anything it does not cover; either way the text must be the one
render_pyyaml gives. Random documents mixing every kind of value and the
characters that change a scalar's style, and every golden case, are
rendered both ways.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import blockyaml, write
from runner import plan as planner
from runner import spec as specs
from runner.targets import argo, dvc, github, install
from tests.installed import golden_framework

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "mlops.yaml").exists())

# Characters that decide a scalar's style: indicators, quotes, spaces and
# breaks, YAML 1.1 words, tabs and control and non-ASCII characters.
TRICKY = st.sampled_from(
    [
        "a", "b", " ", "  ", "\n", "\n\n", ":", ": ", "-", "- ", "#", " #", "'", '"',
        "{", "[", ",", "?", "!", "&", "*", "|", ">", "%", "@", "`", "\t", "\r",
        "\x85", "\u2028", "\ufeff", "\x00", "é", "✓", "yes", "on", "null", "~",
        "1", "0x1", "1.5", "1e3", ".inf", "---", "...", "=", "${", "{{",
    ]
)  # fmt: skip
TEXT = st.lists(TRICKY, max_size=8).map("".join) | st.text(max_size=12)
# Mostly what generated files hold: names, paths, commands, scripts.
USUAL = st.lists(
    st.sampled_from(
        ["a", "-", "_", "/", ".", " ", "{{x}}", "${X}", "'", "\n", "1", ":"]
    ),
    min_size=1,
    max_size=10,
).map("".join)
LONG = st.integers(900, 1100).map(lambda n: "word " * (n // 5))


def _scalars() -> st.SearchStrategy[object]:
    return st.one_of(
        USUAL,
        USUAL,
        TEXT,
        LONG,
        TEXT.map(write.Plain),
        st.tuples(
            st.from_regex(r"[a-z0-9. ]{0,20}", fullmatch=True),
            st.from_regex(r"v[0-9.]{0,8}", fullmatch=True),
        ).map(lambda vc: write.Commented(*vc)),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
    )


NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
ODD_KEYS = st.one_of(TEXT, USUAL, st.integers(-5, 5), st.booleans(), st.none(), LONG)


def _documents(keys: st.SearchStrategy[object]) -> st.SearchStrategy[dict]:  # type: ignore[type-arg]
    return st.dictionaries(
        keys,
        st.recursive(
            _scalars(),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)
            ),
            max_leaves=25,
        ),
        max_size=6,
    )


# Names as keys, as generated files have them; odd keys in their own test,
# where most documents hold one PyYAML writes as a complex key.
DOCUMENTS = _documents(NAMES | st.integers(-5, 5) | st.booleans())
ODD_DOCUMENTS = _documents(NAMES | ODD_KEYS)


def _both(data: dict[object, object]) -> tuple[str, str]:
    try:
        slow = write.HEADER + write.render_pyyaml(data)  # type: ignore[arg-type]
    except ValueError as exc:  # a comment on a key: both must refuse it
        with pytest.raises(ValueError, match="cannot carry a comment"):
            write.render(data)  # type: ignore[arg-type]
        return str(exc), str(exc)
    return write.render(data), slow  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_fast_path_writes_what_pyyaml_writes(data: dict[object, object]) -> None:
    fast, slow = _both(data)
    assert fast == slow


@settings(max_examples=150, deadline=None)
@given(ODD_DOCUMENTS)
def test_with_odd_keys_too(data: dict[object, object]) -> None:
    fast, slow = _both(data)
    assert fast == slow


def test_the_fast_path_covers_generated_files() -> None:
    """Every golden case's files take the fast path: a fallback would be
    correct but slow, and a compile of a large spec would not be linear."""
    covered = 0
    for case in CASES:
        spec = specs.load(GOLDEN / case / "mlops.yaml")
        plan = planner.build(spec, golden_framework(case, spec.ci.get("install")))
        for target in (dvc, argo, github, install):
            for path, data in target.compile_plan(plan).items():
                if isinstance(data, str):
                    continue
                fast = blockyaml.Writer(write._Dumper, write.WIDTH).document(dict(data))
                assert fast == write.render_pyyaml(data), f"{case}/{path}"
                covered += 1
    assert covered > 30


@pytest.mark.parametrize(
    "data",
    [
        {"run": "echo hi \nexit 1"},  # a space before a break: double-quoted
        {"k": "a\n\n"},  # keep chomping (`|+`)
        {"x" * 130: 1},  # a complex key
        {"k": "word " * 300},  # a line PyYAML folds
        {"k": "tab\there"},  # a special character
    ],
)
def test_what_the_fast_path_leaves_to_pyyaml(data: dict[str, object]) -> None:
    with pytest.raises(blockyaml.Unsupported):
        blockyaml.Writer(write._Dumper, write.WIDTH).document(data)
    assert write.render(data) == write.HEADER + write.render_pyyaml(data)


def test_a_type_safedumper_refuses_is_refused_either_way() -> None:
    with pytest.raises(yaml.representer.RepresenterError):
        write.render({"k": object()})
