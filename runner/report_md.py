"""The report's Markdown: pure functions from loaded artifacts to text.

Nothing here reads files or runs commands (`runner.report` does), so every
section is unit-tested on small dicts. The output is GitHub-flavoured Markdown
for a pull-request comment: the verdict first, tables, images, and `<details>`
for long lists, never raw JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OK_MARK = "✅"
FAIL_MARK = "❌"
WARN_MARK = "⚠️"
# Typographic minus and en dash, as escapes so the source stays unambiguous.
MINUS = "\u2212"
NONE = "\u2013"
NOT_PRODUCED = "not produced by this pipeline"
RULE_WORDS = {"min": "≥", "max": "≤", "max_drop": "drop ≤"}
# Captions of the plots the evaluate stage writes, in the order to show them.
CAPTIONS = {
    "confusion.png": "Confusion matrix (test split)",
    "roc.png": "ROC curve (dashed: chance)",
    "prc.png": "Precision-recall curve",
    "importance.png": "Feature importance (top 20)",
    "residuals.png": "Residuals against predictions",
}
LONG_LIST = 8  # rows beyond which a table folds into <details>
SMALL = 1e-3
LARGE = 1e4


@dataclass
class ReportData:
    """Everything a report shows, already loaded; None where an artifact is absent.

    ``stages`` holds the built-in kinds the pipeline has (``evaluate``,
    ``validate``, ``train``, ``register``), so a missing file can be told
    apart from a stage the pipeline does not have.
    """

    project: str
    base: str
    base_found: bool
    stages: frozenset[str]
    gates: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    metrics_diff: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    params_diff: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    main_metrics: Sequence[str] = ()
    plots: Sequence[str] = ()
    validation: Mapping[str, Any] | None = None
    validation_html: str | None = None  # the path in the repository
    validation_href: str | None = None  # the same, relative to report.md
    last_run: Mapping[str, Any] | None = None
    run: Mapping[str, Any] | None = None
    registered: Mapping[str, Any] | None = None


def fmt(value: Any) -> str:
    """A number for a person: four decimals for metric-sized floats."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or SMALL <= abs(value) < LARGE:
            return f"{value:.4f}"
        return f"{value:.4g}"
    return f"`{value}`"


def signed(value: Any) -> str:
    """A change with its sign, to the same four decimals as the values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NONE
    if value == 0:
        return "0"
    text = str(abs(value)) if isinstance(value, int) else f"{abs(value):.4f}"
    if text.strip("0.") == "":
        return "≈ 0"
    return f"+{text}" if value > 0 else f"{MINUS}{text}"


def threshold(value: Any) -> str:
    """A threshold as the user wrote it in mlops.yaml (0.9, not 0.9000)."""
    if isinstance(value, float):
        return f"{value:g}"
    return fmt(value)


def clip(text: str, limit: int = 160) -> str:
    """One table cell's worth of text."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table; cells are escaped so a `|` cannot break it."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fold(summary: str, body: str, rows: int) -> str:
    if rows <= LONG_LIST:
        return body
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def _all_gates(gates: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, dict]]:
    return [(stage, dict(g)) for stage, v in gates.items() for g in v.get("gates", [])]


def gates_failed(verdicts: Mapping[str, Any]) -> bool:
    """A gates.json fails if its verdict or any single gate says so."""
    gates = verdicts.get("gates") or []
    return not verdicts.get("passed", False) or any(not g["passed"] for g in gates)


def verdict(data: ReportData) -> str:
    """The report's first line: did the candidate pass its gates?"""
    if "evaluate" not in data.stages:
        return f"{WARN_MARK} **No gates**: the pipeline has no evaluate stage."
    if not data.gates:
        return f"{WARN_MARK} **No gate results**: run `mlops run` first."
    gates = _all_gates(data.gates)
    failed = [g["metric"] for _, g in gates if not g["passed"]]
    if any(gates_failed(v) for v in data.gates.values()) and not failed:
        return f"{FAIL_MARK} **The gates failed.**"
    if failed:
        return (
            f"{FAIL_MARK} **{len(failed)} of {len(gates)} gates failed**: "
            f"{', '.join(failed)}. This model should not be promoted."
        )
    if not gates:
        return f"{OK_MARK} **No gates are defined**: nothing blocks this model."
    return f"{OK_MARK} **All {len(gates)} gates passed.**"


def _production(gate: Mapping[str, Any]) -> str:
    if gate.get("rule") != "max_drop":
        return ""
    prod = gate.get("production_value")
    if prod is None:
        return str(gate.get("detail") or "")
    if isinstance(gate.get("value"), int | float):
        return f"{fmt(prod)} (candidate {signed(gate['value'] - prod)})"
    return fmt(prod)


def gates_section(data: ReportData) -> str:
    """The gate table: one row per gate, failing ones marked."""
    gates = _all_gates(data.gates)
    if not gates:
        return ""
    many = len(data.gates) > 1
    drops = any(g.get("rule") == "max_drop" for _, g in gates)
    rows = []
    for stage, g in gates:
        name = f"{stage}: {g['metric']}" if many else g["metric"]
        rule = RULE_WORDS.get(str(g.get("rule")), str(g.get("rule")))
        result = f"{OK_MARK} pass" if g["passed"] else f"{FAIL_MARK} **fail**"
        value = fmt(g.get("value")) if g.get("value") is not None else g["detail"]
        row = [name, result, value, f"{rule} {threshold(g.get('threshold'))}"]
        rows.append([*row, _production(g)] if drops else row)
    header = ["Gate", "Result", "Value", "Threshold"]
    return table([*header, "Production model"] if drops else header, rows)


def _metric_rows(entries: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for key in sorted(entries):
        change = entries[key]
        old, new = change.get("old"), change.get("new")
        if isinstance(old, bool) or isinstance(new, bool):
            continue  # verdicts have their own sections
        rows.append([key, fmt(old), fmt(new), signed(change.get("diff"))])
    return rows


def diff_section(data: ReportData) -> str:
    """Metrics and params against the base revision, as old/new/change tables."""
    base = f"`{data.base}`"
    out = [f"### Changes against {base}"]
    if not data.base_found:
        out.append(f"No revision {base} to compare with yet, so no diff is shown.")
        return "\n\n".join(out)
    header_m = ["Metric", base, "this run", "change"]
    metrics = data.metrics_diff or {}
    shown = [p for p in data.main_metrics if p in metrics]
    others = [p for p in sorted(metrics) if p not in shown]
    for path in shown:
        rows = _metric_rows(metrics[path])
        if rows:
            out.append(f"**Test metrics** (`{path}`)\n\n" + table(header_m, rows))
    for path in others:
        rows = _metric_rows(metrics[path])
        if rows:
            body = table(header_m, rows)
            out.append(
                f"<details><summary>Other metrics: <code>{path}</code></summary>"
                f"\n\n{body}\n\n</details>"
            )
    if len(out) == 1:
        out.append(f"No metric changed against {base}.")
    params = {
        f"{key}" if len(data.params_diff or {}) == 1 else f"{path}: {key}": change
        for path, keys in (data.params_diff or {}).items()
        for key, change in keys.items()
    }
    if params:
        rows = [
            [f"`{k}`", fmt(v.get("old")), fmt(v.get("new")), signed(v.get("diff"))]
            for k, v in sorted(params.items())
        ]
        body = table(["Param", base, "this run", "change"], rows)
        out.append(
            "**Params**\n\n" + _fold(f"{len(rows)} params changed", body, len(rows))
        )
    else:
        out.append(f"No parameter changed against {base}.")
    return "\n\n".join(out)


def _caption(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base in CAPTIONS:
        return CAPTIONS[base]
    return base.removesuffix(".png").replace("_", " ").replace("-", " ").capitalize()


def _plot_order(name: str) -> tuple[int, str]:
    base = name.rsplit("/", 1)[-1]
    order = list(CAPTIONS)
    return (order.index(base) if base in order else len(order), name)


def plots_section(plots: Sequence[str]) -> str:
    """The PNGs two to a row, each with its caption as the column heading."""
    if not plots:
        return ""
    ordered = sorted(plots, key=_plot_order)
    pairs = [ordered[i : i + 2] for i in range(0, len(ordered), 2)]
    lines = []
    for n, pair in enumerate(pairs):
        caps = [f"**{_caption(p)}**" if n else _caption(p) for p in pair]
        imgs = [f"![{_caption(p)}]({p})" for p in pair]
        if len(pair) == 1:
            caps.append("")
            imgs.append("")
        if n == 0:
            lines += ["| " + " | ".join(caps) + " |", "| --- | --- |"]
        else:
            lines.append("| " + " | ".join(caps) + " |")
        lines.append("| " + " | ".join(imgs) + " |")
    return "### Plots\n\n" + "\n".join(lines)


def validation_section(data: ReportData) -> str:
    """Failed and warning checks listed, passes counted, the HTML linked."""
    if "validate" not in data.stages:
        return ""
    head = "### Data validation"
    v = data.validation
    if v is None:
        return f"{head}\n\nNo validation results: run `mlops run` first."
    counts = v.get("counts") or {}
    results = v.get("results") or []
    total = counts.get("checks", len(results))
    passed = counts.get("passed", sum(1 for r in results if r.get("passed")))
    errors = counts.get("failed_errors", 0)
    warnings = counts.get("failed_warnings", 0)
    mark = FAIL_MARK if errors else (WARN_MARK if warnings else OK_MARK)
    line = (
        f"{mark} {passed} of {total} checks passed; "
        f"{errors} failed, {warnings} {'warning' if warnings == 1 else 'warnings'}."
    )
    out = [head, line]
    bad = [r for r in results if not r.get("passed")]
    if bad:
        bad.sort(key=lambda r: (r.get("severity") != "error", str(r.get("name"))))
        rows = [
            [
                f"{FAIL_MARK} error"
                if r.get("severity") == "error"
                else f"{WARN_MARK} warning",
                str(r.get("name")),
                f"`{r['column']}`" if r.get("column") else "",
                clip(str(r.get("detail") or "")),
            ]
            for r in bad
        ]
        body = table(["Severity", "Check", "Column", "Detail"], rows)
        out.append(_fold(f"{len(rows)} checks did not pass", body, len(rows)))
    if data.validation_html:
        out.append(
            f"Full deepchecks report: [`{data.validation_html}`]"
            f"({data.validation_href or data.validation_html}) "
            "(a DVC output: `dvc pull` fetches it)."
        )
    return "\n\n".join(out)


def _fenced(text: str) -> str:
    """``text`` as a code block whose fence no backticks in it can close."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


LEFT_OUT = (
    "No gates, metrics, plots or validation results here: the files there are "
    "an earlier run's, not this one's."
)


def failure_section(data: ReportData) -> str | None:
    """The verdict of a run that did not finish, or of no recorded run; None
    when the last run finished.

    Everything else the report would show (gates, metrics, plots, validation)
    is read from files an earlier run left, so it is left out: a reader must
    never take an earlier run's verdict for this one's.
    """
    last = data.last_run
    if last is None:
        return "\n\n".join(
            [
                f"{FAIL_MARK} **No run here**: no `mlops run` recorded "
                "(`.mlops/last-run.json`).",
                f"In CI, a step before the run failed: see the job's log. "
                f"Locally, `mlops run` first. {LEFT_OUT}",
            ]
        )
    if not last.get("error"):
        return None
    stage = last.get("failed")
    where = f" at stage `{stage}`" if stage else ""
    return "\n\n".join(
        [
            f"{FAIL_MARK} **The pipeline failed{where}.**",
            _fenced(str(last["error"])),
            f"The stage's own output is in the run's log (the job's, in CI). "
            f"{LEFT_OUT}",
        ]
    )


def stages_section(last: Mapping[str, Any]) -> str:
    """Which stages of the recorded run ran, were skipped or restored from the
    run-cache, and where it failed."""
    head = "### Pipeline run"

    def names(key: str) -> str:
        found = list(last.get(key) or [])
        return ", ".join(f"`{n}`" for n in found) if found else "none"

    seconds = last.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    lines = [
        head,
        "",
        f"- **Ran**{took}: {names('ran')}",
        f"- **Unchanged**, skipped: {names('unchanged')}",
        f"- **Restored** from the DVC run-cache: {names('restored')}",
    ]
    if last.get("error"):
        stage = last.get("failed")
        where = f": `{stage}`" if stage else " before any stage ran"
        lines.append(f"- **Failed**{where}")
    return "\n".join(lines)


def run_link(run: Mapping[str, Any]) -> str | None:
    """The MLflow UI address of a run, when the tracking URI is a web server."""
    uri = str(run.get("tracking_uri") or "").rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{run.get('experiment_id')}/runs/{run.get('run_id')}"


def mlflow_section(data: ReportData) -> str:
    """The training run and the registered model version."""
    lines = []
    if data.run is not None:
        run = data.run
        link = run_link(run)
        rid = f"`{run.get('run_id')}`"
        shown = f"[{rid}]({link})" if link else rid
        where = "" if link else f" (tracking URI `{run.get('tracking_uri')}`)"
        lines.append(
            f"- **Run** {shown} in experiment `{run.get('experiment_id')}`{where}"
        )
    elif "train" in data.stages:
        lines.append("- **Run**: no `run.json` yet; run `mlops run` first")
    reg = data.registered
    if reg is not None:
        what = f"`{reg.get('model')}` version **{reg.get('version')}**"
        if reg.get("alias"):
            what += f" with alias `@{reg['alias']}`"
        else:
            what += " with no alias: its gates failed"
        if reg.get("reused_existing_version"):
            what += " (the version already registered for this run)"
        lines.append(f"- **Registered** {what}")
    elif "register" in data.stages:
        lines.append("- **Registered**: no `registered.json` yet")
    else:
        lines.append(f"- **Registered**: {NOT_PRODUCED}")
    if data.run is None and "train" not in data.stages:
        return ""
    return "### MLflow\n\n" + "\n".join(lines)


def render(data: ReportData) -> str:
    """The whole report, verdict first; sections without data are left out."""
    ran = stages_section(data.last_run) if data.last_run is not None else ""
    failure = failure_section(data)  # no run recorded, or one that failed
    if failure is not None:
        parts = [f"## mlops report: {data.project}", failure, ran]
        return "\n\n".join(p for p in parts if p) + "\n"
    parts = [
        f"## mlops report: {data.project}",
        verdict(data),
        gates_section(data),
        diff_section(data),
        plots_section(data.plots),
        validation_section(data),
        ran,
        mlflow_section(data),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"
