"""Property: compilation is deterministic and keeps every stage and dependency."""

from __future__ import annotations

import random

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import compile as compiler
from runner import plan as planner
from runner import spec as specs


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, dict[str, object]]:
    """A random DAG of command stages: each may need any earlier one."""
    count = draw(st.integers(min_value=1, max_value=12))
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
            min_size=count, max_size=count, unique=True,
        )
    )  # fmt: skip
    stages: dict[str, dict[str, object]] = {}
    for i, name in enumerate(names):
        needs = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        stage: dict[str, object] = {
            "run": f"python make.py {name}",
            "outs": [f"out/{name}"],
        }
        if needs:
            stage["needs"] = needs
        if draw(st.booleans()):
            stage["with"] = {"size": draw(st.integers(0, 100))}
        stages[name] = stage
    return stages


def _spec_text(stages: dict[str, dict[str, object]]) -> str:
    doc = {
        "version": 1,
        "project": {"name": "prop", "task": "classification", "target": "y"},
        "pipeline": stages,
    }
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=60, deadline=None)
@given(pipelines(), st.randoms(use_true_random=False))
def test_compilation_is_deterministic_and_complete(
    stages: dict[str, dict[str, object]], rnd: random.Random
) -> None:
    text = _spec_text(stages)
    spec = specs.parse(text)
    first = compiler.render(spec)
    assert compiler.render(specs.parse(text)) == first

    # The order stages are written in does not change a byte of the output.
    names = list(stages)
    rnd.shuffle(names)
    assert (
        compiler.render(specs.parse(_spec_text({n: stages[n] for n in names}))) == first
    )

    dvc_stages = yaml.safe_load(first["dvc.yaml"])["stages"]
    assert set(dvc_stages) == set(stages)
    plan = planner.build(spec)
    for name, stage in stages.items():
        deps = set(dvc_stages[name].get("deps", []))
        for need in stage.get("needs", []):  # type: ignore[attr-defined]
            assert f"out/{need}" in deps
            assert (need, name) in plan.edges
    assert {b for _, b in plan.edges} <= set(stages)
    order = [s.name for s in plan.stages]
    assert list(dvc_stages) == order
    for a, b in plan.edges:
        assert order.index(a) < order.index(b)
