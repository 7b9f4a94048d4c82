"""`mlops report` and `mlops gates`: Markdown builders, a real run, a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import report_md
from runner.report import gate_lines
from runner.report_md import ReportData, render
from tests.conftest import ExampleRun
from tests.support import missing, quiet_env, run

GATES_OK = {
    "passed": True,
    "gates": [
        {
            "metric": "accuracy",
            "value": 0.95104895,
            "rule": "min",
            "threshold": 0.9,
            "passed": True,
            "detail": "accuracy=0.9510 >= 0.9",
        },
        {
            "metric": "f1",
            "value": 0.9613,
            "rule": "max_drop",
            "threshold": 0.02,
            "production_value": 0.9670,
            "passed": True,
            "detail": "f1=0.9613 vs production 0.9670: drop 0.0057 <= 0.02",
        },
    ],
}
GATES_FAIL = {
    "passed": False,
    "gates": [
        {**GATES_OK["gates"][0]},
        {
            "metric": "roc_auc",
            "value": 0.91,
            "rule": "min",
            "threshold": 0.95,
            "passed": False,
            "detail": "roc_auc=0.9100 < 0.95",
        },
    ],
}
ALL_STAGES = frozenset({"evaluate", "validate", "train", "register"})


FINISHED = {"ran": ["train"], "unchanged": ["ingest"], "restored": [], "seconds": 2.0,
            "failed": None, "error": None}  # fmt: skip


def _data(**kw: object) -> ReportData:
    base: dict[str, object] = {
        "project": "demo",
        "base": "main",
        "base_found": True,
        "stages": ALL_STAGES,
        "gates": {"evaluate": GATES_OK},
        "last_run": FINISHED,
    }
    base.update(kw)
    return ReportData(**base)  # type: ignore[arg-type]


# --- the Markdown builders --------------------------------------------------


def test_verdict_comes_first_and_names_the_count() -> None:
    text = render(_data())
    lines = [line for line in text.splitlines() if line]
    assert lines[0] == "## mlops report: demo"
    assert lines[1] == "✅ **All 2 gates passed.**"
    assert lines[2].startswith("| Gate | Result | Value | Threshold | Production")


def test_failing_gate_is_shown_failing_in_verdict_and_table() -> None:
    text = render(_data(gates={"evaluate": GATES_FAIL}))
    assert "❌ **1 of 2 gates failed**: roc_auc." in text
    assert "| roc_auc | ❌ **fail** | 0.9100 | ≥ 0.95 |" in text
    assert "| accuracy | ✅ pass | 0.9510 | ≥ 0.9 |" in text
    assert text.index("gates failed") < text.index("| Gate |")


def test_max_drop_gate_compares_with_production() -> None:
    table = report_md.gates_section(_data())
    assert (
        "| f1 | ✅ pass | 0.9613 | drop ≤ 0.02 | 0.9670 (candidate \u22120.0057) |"
        in table
    )


def test_missing_base_is_one_line_not_an_error() -> None:
    text = report_md.diff_section(_data(base_found=False))
    assert text.splitlines()[-1] == (
        "No revision `main` to compare with yet, so no diff is shown."
    )


def test_metrics_and_params_diff_tables() -> None:
    data = _data(
        metrics_diff={
            "artifacts/evaluate/metrics.json": {
                "accuracy": {"old": 0.958041958, "new": 0.951048951, "diff": -0.00699}
            },
            "artifacts/train/train_metrics.json": {
                "f1": {"old": 0.99, "new": 0.99, "diff": 0.0}
            },
        },
        params_diff={"params.yaml": {"stages.train.n": {"old": 200, "new": 50}}},
        main_metrics=["artifacts/evaluate/metrics.json"],
    )
    text = report_md.diff_section(data)
    assert "| accuracy | 0.9580 | 0.9510 | \u22120.0070 |" in text
    assert "<details><summary>Other metrics: <code>artifacts/train/" in text
    assert "| `stages.train.n` | 200 | 50 | \u2013 |" in text


def test_absent_sections_are_left_out_or_say_so() -> None:
    data = _data(
        stages=frozenset({"evaluate", "train"}),
        gates={},
        base_found=False,
    )
    text = render(data)
    assert "⚠️ **No gate results**: run `mlops run` first." in text
    assert "### Data validation" not in text
    assert "### Plots" not in text
    assert f"**Registered**: {report_md.NOT_PRODUCED}" in text
    assert "{" not in text  # no raw JSON
    # No run recorded here (a fresh clone; in CI, a step before the run
    # failed): nothing the files there say is shown as this report.
    text = render(_data(last_run=None, plots=["roc.png"]))
    assert text.splitlines()[2].startswith("❌ **No run here**")
    for earlier in ("Gate", "roc.png", "### Pipeline run", "All 1 gates"):
        assert earlier not in text, earlier


def test_a_failed_run_says_so_and_shows_nothing_an_earlier_run_left() -> None:
    error = "stage 'train' failed (dvc repro exited with 255): bad ``` in a value"
    data = _data(
        plots=["roc.png"],
        validation={"passed": True, "counts": {"checks": 3, "passed": 3}},
        last_run={"ran": ["ingest"], "unchanged": [], "restored": [],
                  "seconds": 1.5, "failed": "train", "error": error},
    )  # fmt: skip
    text = render(data)
    lines = [line for line in text.splitlines() if line]
    assert lines[1] == "❌ **The pipeline failed at stage `train`.**"
    # The error in a block that its own backticks cannot close.
    assert f"\n````\n{error}\n````\n" in text
    for earlier in ("Gate", "roc.png", "Data validation", "All 1 gates"):
        assert earlier not in text, earlier
    assert "- **Ran** in 1.5 s: `ingest`" in text and "- **Failed**: `train`" in text
    # Stopped before any stage (the compile, the remote, an interrupt).
    data = _data(last_run={"ran": [], "failed": None, "error": "interrupted"})
    text = render(data)
    assert "❌ **The pipeline failed.**" in text
    assert "- **Failed** before any stage ran" in text


def test_validation_lists_failures_and_counts_passes() -> None:
    results = [
        {"name": "min", "column": "x", "severity": "error", "passed": False,
         "detail": "3 values below min 0"},
        {"name": "suite: Mixed Nulls", "column": None, "severity": "warning",
         "passed": False, "detail": "nulls " * 100},
        *[{"name": "type", "column": "y", "severity": "error", "passed": True,
           "detail": "ok"}] * 5,
    ]  # fmt: skip
    counts = {"checks": 7, "passed": 5, "failed_errors": 1, "failed_warnings": 1}
    text = report_md.validation_section(
        _data(
            validation={"passed": False, "counts": counts, "results": results},
            validation_html="artifacts/validate/deepchecks.html",
        )
    )
    assert "❌ 5 of 7 checks passed; 1 failed, 1 warning." in text
    assert "| ❌ error | min | `x` | 3 values below min 0 |" in text
    assert "…" in text  # a long detail is clipped
    assert "[`artifacts/validate/deepchecks.html`]" in text


def test_mlflow_link_only_for_a_web_tracking_server() -> None:
    run = {"run_id": "abc", "experiment_id": "3", "tracking_uri": "http://mlf:5000/"}
    text = report_md.mlflow_section(_data(run=run))
    assert "[`abc`](http://mlf:5000/#/experiments/3/runs/abc)" in text
    local = report_md.mlflow_section(_data(run={**run, "tracking_uri": "sqlite:///x"}))
    assert "](" not in local and "`sqlite:///x`" in local


def test_registered_without_alias_says_why() -> None:
    reg = {"model": "m", "version": "4", "alias": None, "gates_passed": False}
    text = report_md.mlflow_section(_data(registered=reg))
    assert "`m` version **4** with no alias: its gates failed" in text


def test_plots_two_to_a_row_with_captions() -> None:
    text = report_md.plots_section(["roc.png", "confusion.png", "extra_plot.png"])
    assert text.index("confusion.png") < text.index("roc.png")
    assert "![Confusion matrix (test split)](confusion.png)" in text
    assert "**Extra plot**" in text


def test_number_formatting() -> None:
    assert report_md.fmt(0.958041958) == "0.9580"
    assert report_md.fmt(200) == "200"
    assert report_md.fmt(1.5e-7) == "1.5e-07"
    assert report_md.signed(-2.3e-5) == "≈ 0"
    assert report_md.signed(0.0111) == "+0.0111"


def test_gate_lines_summarise_and_fail() -> None:
    lines, ok = gate_lines({"evaluate": GATES_FAIL})
    assert not ok
    assert lines[1] == "FAIL  roc_auc min: roc_auc=0.9100 < 0.95"
    assert lines[-1] == "1 of 2 gates failed"
    assert gate_lines({"evaluate": GATES_OK}) == (
        [
            "PASS  accuracy min: accuracy=0.9510 >= 0.9",
            "PASS  f1 max_drop: f1=0.9613 vs production 0.9670: drop 0.0057 <= 0.02",
            "all 2 gates passed",
        ],
        True,
    )


# --- a real pipeline: main, then a branch that changes a training param -----


def _env() -> dict[str, str]:
    env = quiet_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(list(args), cwd=cwd, check=check, env=_env())


def _mlops(
    *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _sh(sys.executable, "-m", "runner.cli", *args, cwd=cwd, check=check)


@pytest.fixture(scope="module")
def branch(tmp_path_factory: pytest.TempPathFactory, example_run: ExampleRun) -> Path:
    """The example run on `main`, then re-run on a branch with fewer trees."""
    root = example_run.copy(tmp_path_factory.mktemp("report") / "repo")
    _sh("git", "add", "-A", cwd=root)
    _sh("git", "commit", "-q", "-m", "baseline", cwd=root)
    _sh("git", "checkout", "-q", "-b", "fewer-trees", cwd=root)
    spec = root / "mlops.yaml"
    spec.write_text(spec.read_text().replace("n_estimators: 200", "n_estimators: 50"))
    _mlops("run", cwd=root)
    _mlops("report", "--output", "out", cwd=root)
    return root


def test_report_shows_the_change_and_its_plots(branch: Path) -> None:
    text = (branch / "out" / "report.md").read_text()
    assert text.splitlines()[2] == "✅ **All 3 gates passed.**"
    assert "| `stages.train.with.params.n_estimators` | 200 | 50 | \u2212150 |" in text
    assert "### Changes against `main`" in text
    assert "| accuracy | 0.9580 |" in text  # the baseline's test accuracy
    for png in ("confusion.png", "roc.png", "prc.png", "importance.png"):
        assert (branch / "out" / png).stat().st_size > 0
        assert f"]({png})" in text
    assert "- **Ran** in" in text and "`train`, `evaluate`, `register`" in text
    assert "version **2** with alias `@candidate`" in text


def test_report_without_a_base_revision(branch: Path) -> None:
    proc = _mlops("report", "--output", "nobase", "--base", "nope", cwd=branch)
    assert "nobase/report.md" in proc.stdout
    text = (branch / "nobase" / "report.md").read_text()
    assert "No revision `nope` to compare with yet" in text


def test_gates_exit_codes(branch: Path) -> None:
    ok = _mlops("gates", cwd=branch, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "all 3 gates passed"
    path = branch / "artifacts/evaluate/gates.json"
    saved = path.read_text()
    try:
        data = json.loads(saved)
        data["passed"] = False
        data["gates"][1].update(passed=False, detail="roc_auc=0.9100 < 0.95")
        path.write_text(json.dumps(data))
        bad = _mlops("gates", cwd=branch, check=False)
        assert bad.returncode == 1
        assert "FAIL  roc_auc min: roc_auc=0.9100 < 0.95" in bad.stdout
        path.unlink()
        gone = _mlops("gates", cwd=branch, check=False)
        assert gone.returncode == 1
        assert gone.stderr.strip() == (
            "mlops: error: artifacts/evaluate/gates.json is missing: "
            "run `mlops run` first"
        )
    finally:
        path.write_text(saved)


# --- how a person sees it: GitHub-like HTML in a headless Chromium ----------

CSS = (
    "body{font-family:sans-serif;font-size:14px;line-height:1.5;max-width:880px;"
    "margin:16px auto;color:#1f2328}table{border-collapse:collapse}"
    "td,th{border:1px solid #d1d9e0;padding:6px 13px}img{max-width:100%}"
    "code{background:#eff1f3;padding:.2em .4em;border-radius:6px}"
)
# Written into the page after load: how many images decoded, out of how many.
PROBE = (
    "<script>addEventListener('load',()=>{const i=[...document.images];"
    "const p=document.createElement('pre');p.id='probe';"
    "p.textContent=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;"
    "document.body.append(p)})</script>"
)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not installed (`make test` installs it as root)")
    return found


def _browser(exe: str, profile: Path, *args: str) -> str:
    proc = subprocess.run(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1000,2400", *args,
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return proc.stdout


def test_report_renders_with_its_images_in_a_browser(
    branch: Path, tmp_path: Path
) -> None:
    from markdown_it import MarkdownIt
    from PIL import Image

    exe = _chromium()
    out = branch / "out"
    body = (
        MarkdownIt("commonmark").enable("table").render((out / "report.md").read_text())
    )
    page = out / "report.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style>"
        f"</head><body>{body}{PROBE}</body></html>",
        encoding="utf-8",
    )
    assert body.count("<table>") >= 3 and "<details>" in body
    dom = _browser(exe, tmp_path / "p1", "--dump-dom", page.as_uri())
    assert '<pre id="probe">4/4</pre>' in dom
    shot = tmp_path / "report.png"
    _browser(exe, tmp_path / "p2", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as img:
        assert img.size == (1000, 2400)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # None: more colours than that


def test_base_falls_back_to_the_remote_tracking_branch(branch: Path) -> None:
    # A CI checkout has origin/<base> but often no local branch of that name.
    _sh("git", "update-ref", "refs/remotes/origin/trunk", "main", cwd=branch)
    _mlops("report", "--output", "ci", "--base", "trunk", cwd=branch)
    text = (branch / "ci" / "report.md").read_text()
    assert "### Changes against `trunk`" in text
    assert "| `stages.train.with.params.n_estimators` | 200 | 50 |" in text
