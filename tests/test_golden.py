"""Golden cases: a spec in, the exact generated files out.

UPDATE_GOLDEN=1 pytest tests/test_golden.py rewrites the expected files (never in CI).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from runner import compile as compiler
from runner import deploy_state
from runner import spec as specs
from tests.installed import golden_framework

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "mlops.yaml").exists())


def _expected_files(case: Path, spec: specs.Spec) -> set[str]:
    # The inputs: the spec, and the release record a promotion would have written.
    inputs = {"mlops.yaml", deploy_state.release_path(spec)}
    return {
        rel
        for p in case.rglob("*")
        if p.is_file() and (rel := str(p.relative_to(case))) not in inputs
    }


@pytest.mark.parametrize("case", CASES)
def test_compiles_to_golden_files(case: str) -> None:
    folder = GOLDEN / case
    spec = specs.load(folder / "mlops.yaml")
    framework = golden_framework(case, spec.ci.get("install"))
    rendered = compiler.render_at(spec, folder, framework)
    if os.environ.get("UPDATE_GOLDEN"):
        if os.environ.get("CI"):
            pytest.fail(
                "UPDATE_GOLDEN is refused in CI: golden files change only by review"
            )
        for rel, text in rendered.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    assert set(rendered) == _expected_files(folder, spec), "generated file set changed"
    for rel, text in rendered.items():
        expected = (folder / rel).read_text()
        if text != expected:
            diff = "".join(
                difflib.unified_diff(
                    expected.splitlines(True),
                    text.splitlines(True),
                    f"golden/{rel}",
                    "compiled",
                )
            )
            pytest.fail(f"{case}/{rel} differs from the golden file:\n{diff}")


def test_example_golden_is_the_repository_example() -> None:
    root = Path(__file__).resolve().parent.parent
    assert (GOLDEN / "example" / "mlops.yaml").read_bytes() == (
        root / "mlops.yaml"
    ).read_bytes()
