"""Bad input: a clear error naming file, line, key and what was expected,
exit 2 from `mlops validate`, `compile` and `run`, and nothing written.

Each case is a small valid spec with one thing broken, at the level of bytes
(encodings, line ends, control characters) or of YAML (syntax, duplicate and
unknown keys, wrong types, nulls, nesting).
"""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner import cli, yamlsource
from runner.yamlsource import MAX_BYTES, MAX_DEPTH, MAX_REPORTED
from tests.support import ROOT

BASE = textwrap.dedent(
    """\
    version: 1
    project:
      name: demo
      description: A demo model.
      task: classification
      target: target
    data:
      raw:
        sklearn: iris
    pipeline:
      ingest:
        uses: ingest
        with:
          source: raw
      prep:
        run: python prep.py
        needs: [ingest]
        deps: [prep.py]
        outs: [out/prep]
    deploy:
      prediction_log:
        sample: 0.5
    argo:
      tolerations:
        - key: gpu
          operator: Exists
    """
)


def _sub(old: str, new: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        assert data.count(old.encode()) == 1, old
        return data.replace(old.encode(), new.encode())

    return edit


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _then(*edits: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        for e in edits:
            data = e(data)
        return data

    return edit


# (case, how the base spec is broken, the exact error lines after "mlops.yaml:")
CASES: list[tuple[str, Callable[[bytes], bytes], list[str]]] = [
    (
        "malformed-yaml",
        _sub("needs: [ingest]", "needs: [ingest"),
        ["18:9: pipeline -> prep -> needs: invalid YAML: while parsing a flow "
         "sequence (from line 17, column 12), expected ',' or ']', but got ':'"],
    ),
    (
        "duplicate-key",
        _sub("  task: classification\n", "  task: classification\n  task: regression\n"),
        ["6:3: project -> task: duplicate key"],
    ),
    (
        "unknown-top-key",
        _sub("version: 1\n", "version: 1\nstorrage: {}\n"),
        ["2:1: storrage: unknown key; expected one of: argo, ci, data, deploy, gates, "
         "monitoring, pipeline, project, registry, storage, version"],
    ),
    (
        "unknown-key-depth-4",
        _sub("      source: raw\n", "      source: raw\n      colums: [a]\n"),
        ["15:7: pipeline -> ingest -> with -> colums: unknown key; "
         "expected one of: columns, source"],
    ),
    (
        "unknown-key-in-a-list",
        _sub("operator: Exists", "operator: Exists\n      efect: NoSchedule"),
        ["27:7: argo -> tolerations -> 0 -> efect: unknown key; expected one of: "
         "effect, key, operator, tolerationSeconds, value"],
    ),
    (
        "wrong-type",
        _sub("needs: [ingest]", "needs: ingest"),
        ["17:12: pipeline -> prep -> needs: 'ingest' is not of type 'array'"],
    ),
    (
        "wrong-type-number",
        _sub("sample: 0.5", "sample: half"),
        ["22:13: deploy -> prediction_log -> sample: 'half' is not of type 'number'"],
    ),
    (
        "null-value",
        _sub("target: target", "target:"),
        ["6:10: project -> target: a value is needed: null is not of type 'string'"],
    ),
    (
        "null-stage",
        _sub("  prep:\n    run: python prep.py\n    needs: [ingest]\n"
             "    deps: [prep.py]\n    outs: [out/prep]\n", "  prep:\n"),
        [
            "15:3: pipeline -> prep: expected exactly one of: a built-in stage with "
            "`uses`; a command with `run`",
            "15:8: pipeline -> prep: a value is needed: null is not of type 'object'",
        ],
    ),
    (
        "crlf-line-ends",
        _then(_sub("sample: 0.5", "sample: half"), _crlf),
        ["22:13: deploy -> prediction_log -> sample: 'half' is not of type 'number'"],
    ),
    (
        "utf8-bom",
        _then(_sub("needs: [ingest]", "needs: ingest"), codecs.BOM_UTF8.__add__),
        ["17:12: pipeline -> prep -> needs: 'ingest' is not of type 'array'"],
    ),
    (
        "utf16",
        lambda data: data.decode().encode("utf-16"),
        ["1:1: the file is UTF-16 text (it starts with a byte-order mark); "
         "save it as UTF-8"],
    ),
    (
        "nul-byte",
        _sub("A demo", "A de\0mo"),
        ["4:20: project -> description: the character U+0000 is not allowed in YAML "
         "(a NUL byte: is this a binary file?)"],
    ),
    (
        "control-character-in-a-key",
        _sub("  prep:", "  pr\x1bep:"),
        ["15:5: pipeline -> pr\\x1bep: the character U+001B is not allowed in YAML"],
    ),
    (
        "not-utf8",
        lambda data: data.replace(b"A demo", b"A d\xe9mo"),
        ["4:19: project -> description: byte 0xe9 is not UTF-8 text; "
         "save the file as UTF-8"],
    ),
    (
        "not-utf8-twice",
        lambda data: data.replace(b"A demo", b"A d\xe9mo").replace(
            b"python prep.py", b"python pr\xffep.py"
        ),
        [
            "4:19: project -> description: byte 0xe9 is not UTF-8 text; "
            "save the file as UTF-8",
            "16:19: pipeline -> prep -> run: byte 0xff is not UTF-8 text; "
            "save the file as UTF-8",
        ],
    ),
    (
        "nested-too-deep",
        _sub("sample: 0.5", "sample: " + "[" * 5000 + "]" * 5000),
        [f"22:{13 + MAX_DEPTH - 3}: nested more than {MAX_DEPTH} levels deep"],
    ),
]  # fmt: skip


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_base_spec_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Each case breaks one thing: the spec it starts from is valid, with LF,
    with CRLF line ends and with a UTF-8 byte-order mark."""
    spec = tmp_path / "mlops.yaml"
    for data in (BASE.encode(), _crlf(BASE.encode()), codecs.BOM_UTF8 + BASE.encode()):
        spec.write_bytes(data)
        assert cli.main(["validate", "-f", str(spec)]) == 0
    assert "valid (2 stages)" in capsys.readouterr().out


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_error(
    case: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figure,
) -> None:
    _, edit, expected = CASES[case]
    (tmp_path / "mlops.yaml").write_bytes(edit(BASE.encode()))
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    for command in ("validate", "compile", "run"):
        assert cli.main([command, "-f", "mlops.yaml"]) == cli.EXIT_SPEC, command
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [f"mlops.yaml:{e}" for e in expected]
        assert "Traceback" not in captured.err
        assert _tree(tmp_path) == before, f"{command} wrote files"
    figure(
        "bad input",
        "a broken spec: bad YAML, duplicate, unknown or null keys, wrong types, CRLF, BOM, NUL, bad bytes, deep nesting",
        "validate, compile and run exit 2 naming file:line:column and key; nothing written",
    )


def test_the_exit_code_of_the_command(tmp_path: Path) -> None:
    """The installed `mlops` exits 2, printing the error and no traceback."""
    _, edit, expected = CASES[0]
    (tmp_path / "mlops.yaml").write_bytes(edit(BASE.encode()))
    before = _tree(tmp_path)
    for command in ("validate", "compile", "run"):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "mlops"), command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == cli.EXIT_SPEC, done.stderr
        assert done.stderr.splitlines() == [f"mlops.yaml:{e}" for e in expected]
    assert _tree(tmp_path) == before


# Run in a fresh interpreter so that memory and time are the command's own.
# The CLI's imports are done first: they cost the same for every spec.
MEASURE = """
import json, resource, sys, time, tracemalloc
from runner import cli, spec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
start = time.perf_counter()
code = cli.main(["validate", "-f", sys.argv[1]])
seconds = time.perf_counter() - start
_, peak = tracemalloc.get_traced_memory()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "peak": peak,
                  "rss_growth_kb": after - before, "rss_kb": after}))
"""


def test_a_20_mb_spec_is_refused_fast_and_small(tmp_path: Path, figure) -> None:
    big = tmp_path / "mlops.yaml"
    line = "# " + "x" * 97 + "\n"
    size = 20 * 1024 * 1024
    big.write_text(BASE + line * (size // len(line) + 1))
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    print("20 MB spec:", result)  # noqa: T201  (shown with -s: the measurement)
    assert result["code"] == cli.EXIT_SPEC
    assert done.stderr == (
        f"{big}:1:1: the file is {big.stat().st_size:,} bytes; "
        f"a spec may be at most {MAX_BYTES:,} bytes\n"
    )
    assert result["seconds"] < 1.0
    assert result["peak"] < 100 * 2**20
    assert result["rss_growth_kb"] * 1024 < 100 * 2**20
    figure(
        "bad input",
        "a 20 MB spec",
        "refused at 1:1 with exit 2, before it is parsed",
        seconds=round(result["seconds"], 3),
        peak_MB=round(result["peak"] / 2**20, 1),
    )


@pytest.mark.parametrize("byte", [b"\xff", b"\0"], ids=["not-utf8", "nul"])
def test_a_file_of_bad_bytes_costs_one_pass(
    byte: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], figure
) -> None:
    """A megabyte of bad bytes: the first ones named, the rest counted, in
    about a second (decoding byte by byte took 17 s for a fifth of this)."""
    spec = tmp_path / "mlops.yaml"
    spec.write_bytes(byte * MAX_BYTES)
    start = time.perf_counter()
    assert cli.main(["validate", "-f", str(spec)]) == cli.EXIT_SPEC
    seconds = time.perf_counter() - start
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == MAX_REPORTED + 1
    assert lines[0].startswith(f"{spec}:1:1: ")
    more = MAX_BYTES - MAX_REPORTED
    assert lines[-1] == f"{spec}:1:{MAX_REPORTED + 1}: and {more} more like these"
    assert seconds < 10
    figure(
        "bad input",
        "a megabyte of bad bytes (0xff, NUL)",
        f"the first {MAX_REPORTED} named at their column, the rest counted, in one pass",
        seconds=round(seconds, 2),
    )


def test_too_many_values_stop_the_composer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    figure,
) -> None:
    """Values are counted while composing (pure Python, seconds a megabyte),
    not only while aliases are expanded after it."""
    monkeypatch.setattr(yamlsource, "MAX_NODES", 30)
    spec = tmp_path / "mlops.yaml"
    spec.write_text(BASE)
    assert cli.main(["validate", "-f", str(spec)]) == cli.EXIT_SPEC
    assert capsys.readouterr().err == (
        f"{spec}:16:5: the document holds more than 30 values\n"
    )
    figure(
        "bad input",
        "more values than the limit (100,000; alias bombs included)",
        "refused while composing, at the value that crossed it",
    )
