"""`mlops report` and `mlops gates`: read the run's artifacts, write the report.

The I/O half: find each built-in stage's files through the plan, ask DVC for
the metrics and params diff against a base revision, copy the plots beside
``report.md``. `runner.report_md` turns the loaded data into Markdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner import MAIN_BRANCH, engine
from runner.errors import RunError
from runner.plan import Plan, PlannedStage
from runner.report_md import ReportData, failure_section, gates_failed, render

REPORT_FILE = "report.md"
DEFAULT_OUTPUT = ".mlops/report"
DEFAULT_BASE = MAIN_BRANCH
# Built-in stage kinds and the output roles the report reads from them.
REPORTED = {
    "evaluate": ("metrics", "gates", "plots"),
    "validate": ("validation", "validation_report"),
    "train": ("run",),
    "register": ("registered",),
}


def stages_of(plan: Plan, kind: str) -> list[PlannedStage]:
    """The plan's built-in stages of one kind, in pipeline order."""
    return [s for s in plan.stages if s.uses == kind]


def _load_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot read it as JSON ({exc})") from exc


def _last_output(root: Path, plan: Plan, kind: str, role: str) -> Any | None:
    """The JSON a role holds in the last stage of a kind (the final model's)."""
    found = stages_of(plan, kind)
    if not found:
        return None
    return _load_json(root / found[-1].outputs[role])


def resolve_base(root: Path, base: str) -> str | None:
    """The base as a revision DVC can read, or None if git does not know it.

    A CI checkout has ``origin/main`` but often no local ``main``, so the
    remote-tracking branch is tried second.
    """
    for rev in (base, f"origin/{base}"):
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return rev
    return None


# The two DVC commands the report reads, both --json, against one revision.
DIFFS = {
    "metrics": ("metrics", "diff", "{rev}", "--all", "--json"),
    "params": ("params", "diff", "{rev}", "--json"),
}


class Diffs:
    """DVC's metrics and params diff against a base, as its CLI prints them.

    One process runs both (see `_diffs_main`), started at once: each
    `python -m dvc` paid about a second of imports, most of what `mlops
    report` cost (issue 13), and now they overlap reading the spec and the
    run's files.
    """

    def __init__(self, root: Path, base: str) -> None:
        self.rev = resolve_base(root, base) if root.is_dir() else None
        self._proc: subprocess.Popen[str] | None = None
        if self.rev is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "runner.report", self.rev], cwd=root,
                env=engine.environment(), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip

    def result(self) -> dict[str, dict[str, Any]] | None:
        """{"metrics": ..., "params": ...}, or None without a base revision."""
        if self._proc is None:
            return None
        out, err = self._proc.communicate()
        if self._proc.returncode != 0:
            what = " and ".join(f"dvc {' '.join(a[:2])}" for a in DIFFS.values())
            detail = (err or out).strip().splitlines()
            last = detail[-1] if detail else self._proc.returncode
            raise RunError(f"{what} failed: {last}")
        data = json.loads(out)
        return {k: v if isinstance(v, dict) else {} for k, v in data.items()}

    def close(self) -> None:
        """Stop the process if its result was never read."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


@contextlib.contextmanager
def diffs_started(root: Path, base: str) -> Iterator[Diffs]:
    """Diffs of the repository at root against base, stopped when left."""
    diffs = Diffs(root, base)
    try:
        yield diffs
    finally:
        diffs.close()


def _diffs_main(rev: str) -> int:
    """Run each of DIFFS through DVC's own CLI in this process; print one
    JSON object of their outputs, or stop at the first that fails (its
    error is on stderr, as DVC wrote it)."""
    from dvc.cli import main as dvc_main

    found: dict[str, Any] = {}
    for name, args in DIFFS.items():
        with _stdout_captured() as out:
            code = dvc_main([a.format(rev=rev) for a in args])
        if code != 0:
            return int(code)
        found[name] = json.loads("".join(out) or "{}")
    sys.stdout.write(json.dumps(found) + "\n")
    return 0


@contextlib.contextmanager
def _stdout_captured() -> Iterator[list[str]]:
    """What is written to file descriptor 1 meanwhile, in the list yielded.

    By descriptor: DVC's console writes to the stdout it found at import,
    which contextlib.redirect_stdout does not replace.
    """
    text: list[str] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(out.fileno(), 1)
        try:
            yield text
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            out.seek(0)
            text.append(out.read())


def load_gates(root: Path, plan: Plan) -> dict[str, dict[str, Any]]:
    """gates.json of every evaluate stage, by stage name; a clear error if absent."""
    stages = stages_of(plan, "evaluate")
    if not stages:
        raise RunError("the pipeline has no evaluate stage, so it has no gates")
    verdicts = {}
    for stage in stages:
        path = stage.outputs["gates"]
        data = _load_json(root / path)
        if data is None:
            raise RunError(f"{path} is missing: run `mlops run` first")
        verdicts[stage.name] = data
    return verdicts


def gate_lines(verdicts: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """One line per gate and a summary; True when every gate passed."""
    lines = []
    total = failed = 0
    many = len(verdicts) > 1
    for stage, data in verdicts.items():
        for g in data.get("gates") or []:
            total += 1
            failed += not g["passed"]
            where = f"{stage}: " if many else ""
            mark = "PASS" if g["passed"] else "FAIL"
            lines.append(f"{mark}  {where}{g['metric']} {g['rule']}: {g['detail']}")
    ok = not any(gates_failed(v) for v in verdicts.values())
    if not total:
        lines.append("no gates are defined" if ok else "gates FAILED")
    elif ok:
        lines.append(f"all {total} gates passed")
    else:
        lines.append(f"{failed or 'the'} of {total} gates failed")
    return lines, ok


def _plots(root: Path, plan: Plan) -> list[tuple[Path, str]]:
    """(source, name beside report.md) for every PNG an evaluate stage wrote."""
    stages = stages_of(plan, "evaluate")
    out = []
    for stage in stages:
        folder = root / stage.outputs["plots"]
        if not folder.is_dir():
            continue
        for png in sorted(folder.glob("*.png")):
            name = f"{stage.name}-{png.name}" if len(stages) > 1 else png.name
            out.append((png, name))
    return out


def collect(
    root: Path, plan: Plan, base: str, output: Path, diffs: Diffs | None = None
) -> ReportData:
    """Load everything the report shows; absent artifacts stay None.

    diffs, started earlier (diffs_started), saves waiting for DVC."""
    if diffs is None:
        with diffs_started(root, base) as started:
            return collect(root, plan, base, output, started)
    rev = diffs.rev
    evaluate = stages_of(plan, "evaluate")
    verdicts = {}
    for stage in evaluate:
        data = _load_json(root / stage.outputs["gates"])
        if data is not None:
            verdicts[stage.name] = data
    html = href = None
    validate = stages_of(plan, "validate")
    if validate:
        html = validate[-1].outputs["validation_report"]
        href = os.path.relpath(root / html, output).replace(os.sep, "/")
    found = diffs.result()
    metrics = found["metrics"] if found else None
    for stage in validate:  # verdicts have sections of their own
        (metrics or {}).pop(stage.outputs["validation"], None)
    for stage in evaluate:
        (metrics or {}).pop(stage.outputs["gates"], None)
    return ReportData(
        project=plan.spec.project.name,
        base=base,
        base_found=rev is not None,
        stages=frozenset(s.uses for s in plan.stages if s.uses in REPORTED),
        gates=verdicts,
        metrics_diff=metrics,
        params_diff=found["params"] if found else None,
        main_metrics=[s.outputs["metrics"] for s in evaluate],
        plots=[name for _, name in _plots(root, plan)],
        validation=_last_output(root, plan, "validate", "validation"),
        validation_html=html,
        validation_href=href,
        last_run=_load_json(root / engine.LAST_RUN),
        run=_last_output(root, plan, "train", "run"),
        registered=_last_output(root, plan, "register", "registered"),
    )


def failed_run(root: Path) -> str | None:
    """Why the last `mlops run` here did not finish, or None if it did (or
    none is recorded)."""
    last = _load_json(root / engine.LAST_RUN)
    if not isinstance(last, dict) or not last.get("error"):
        return None
    stage = last.get("failed")
    where = f" at stage {stage!r}" if stage else ""
    return f"the last run failed{where}: {last['error']}"


def write(
    root: Path, plan: Plan, base: str, output: Path, diffs: Diffs | None = None
) -> Path:
    """Write ``report.md`` and its images into ``output``; return the report."""
    output.mkdir(parents=True, exist_ok=True)
    data = collect(root, plan, base, output.resolve(), diffs)
    if failure_section(data) is None:  # else the plots there are an earlier run's
        for src, name in _plots(root, plan):
            shutil.copyfile(src, output / name)
    report = output / REPORT_FILE
    report.write_text(render(data), encoding="utf-8")
    return report


if __name__ == "__main__":
    raise SystemExit(_diffs_main(sys.argv[1]))
