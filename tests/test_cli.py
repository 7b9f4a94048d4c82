"""The CLI: fast paths stay light, and the repository's own files are fresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner import cli
from runner.jsonschema_import import FORMAT_LIBRARIES
from tests.support import ROOT

# What the fast commands must not import: the heavy libraries, and the ones
# jsonschema would import for format checks (runner/jsonschema_import.py).
HEAVY = ("mlflow", "deepchecks", "sklearn", "dvc", "pandas", *FORMAT_LIBRARIES)


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


def test_deepchecks_is_imported_without_jsonschemas_format_libraries() -> None:
    # As a stage imports it (stages.suites.load_deepchecks first); afterwards
    # those libraries still import for whoever needs them (requests: idna).
    probe = (
        "import json, sys\n"
        "from stages import suites\n"
        "suites.load_deepchecks()\n"
        "import deepchecks.tabular.suites\n"
        f"format_libraries = {list(FORMAT_LIBRARIES)!r}\n"
        "loaded = [m for m in format_libraries if m in sys.modules]\n"
        "import idna, jsonpointer\n"
        "print(json.dumps(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(proc.stdout.splitlines()[-1]) == []


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


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `mlops validate | head -0`: the pipe is closed before the line is written.
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "validate"], cwd=ROOT, stdout=write,
        stderr=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    os.close(write)
    assert proc.returncode == cli.EXIT_BROKEN_PIPE, proc.stderr
    assert proc.stderr == ""  # no traceback, now or at exit
