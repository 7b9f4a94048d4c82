"""Invalid specs: each gets exact error lines, exit code 2, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner import cli
from runner.yamlsource import MAX_BYTES

INVALID = Path(__file__).parent / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_error_lines_are_exact(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(INVALID)
    code = cli.main(["validate", "-f", f"{case}.yaml"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_SPEC
    assert err == (INVALID / f"{case}.expected").read_text()
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith(f"{case}.yaml:"), line


@pytest.mark.parametrize("case", CASES)
def test_nothing_is_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(INVALID / f"{case}.yaml", tmp_path / "mlops.yaml")
    before = sorted(tmp_path.rglob("*"))
    for command in ("compile", "run", "plan"):
        assert cli.main([command, "-f", str(tmp_path / "mlops.yaml")]) == cli.EXIT_SPEC
    assert sorted(tmp_path.rglob("*")) == before
    capsys.readouterr()


def test_traceback_flag_shows_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID)
    from runner.errors import SpecError

    with pytest.raises(SpecError):
        cli.main(["--traceback", "validate", "-f", "python-tag.yaml"])


def test_oversized_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "mlops.yaml"
    big.write_text("version: 1\n" + "# padding\n" * (MAX_BYTES // 10 + 1))
    assert cli.main(["validate", "-f", str(big)]) == cli.EXIT_SPEC
    assert "a spec may be at most 1,000,000 bytes" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-f", str(tmp_path / "nope.yaml")]) == cli.EXIT_SPEC
    assert "nope.yaml:1:1: no such file" in capsys.readouterr().err
