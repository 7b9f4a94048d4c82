"""The CLI: fast paths stay light, and the repository's own files are fresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runner import cli
from tests.support import ROOT

HEAVY = ("mlflow", "deepchecks", "sklearn", "dvc", "pandas")


@pytest.mark.parametrize("argv", [["--help"], ["validate"], ["compile", "--check"]])
def test_fast_commands_do_not_import_heavy_libraries(argv: list[str]) -> None:
    probe = (
        "import json, sys\n"
        "from runner import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert not loaded.intersection(HEAVY), loaded.intersection(HEAVY)


def test_committed_generated_files_are_fresh(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["compile", "--check"]) == 0, capsys.readouterr().err


def test_validate_reports_stage_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["validate"]) == 0
    assert capsys.readouterr().out == "mlops.yaml: valid (6 stages)\n"
