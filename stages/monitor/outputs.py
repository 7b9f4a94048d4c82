"""What a drift check leaves behind: ``monitor.json``, ``summary.md`` and
``metrics.prom``, all from the one result mapping :func:`stages.monitor.cli`
builds (the HTML report is :mod:`stages.monitor.report`'s).

The Markdown is pure text, for the job summary and a pull request's body. The
Prometheus file is in the text exposition format that node-exporter's
textfile collector reads and a Pushgateway accepts (``curl --data-binary
@metrics.prom $PUSHGATEWAY/metrics/job/mlops-monitor``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages import common

RESULT_FILE = "monitor.json"
SUMMARY_FILE = "summary.md"
METRICS_FILE = "metrics.prom"
REPORT_FILE = "report.html"
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
# Table rows shown in the Markdown; monitor.json has them all.
MAX_ROWS = 40


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _score_row(s: Mapping[str, Any]) -> str:
    state = (
        "**drift**" if s["drifted"] else ("not checked" if s["score"] is None else "ok")
    )
    note = f" ({s['reason']})" if s.get("reason") else ""
    return (
        f"| {s['name']} | {s['method']} | {_fmt(s['score'])} | {s['threshold']:g} | "
        f"{state}{note} |"
    )


def _ordered(scores: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(scores, key=lambda s: (not s["drifted"], -(s["score"] or 0.0)))


def _who(result: Mapping[str, Any]) -> str:
    ref = result["reference"]
    if not ref.get("version"):
        return "the production model (not found)"
    commit = (ref.get("git_commit") or "")[:8] or "an unknown commit"
    return (
        f"{ref['model']} version {ref['version']}, trained at {commit} on train "
        f"split md5 `{ref.get('data_md5') or '?'}` ({ref.get('rows', '?')} rows)"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The summary: verdict, why, what was compared, the score table."""
    cur = result["current"]
    window = cur.get("window") or {}
    lines = [
        f"## mlops monitor: {result['verdict']}",
        "",
        f"Reference: {_who(result)}.",
        f"Current: {cur.get('source', '?')}, {cur.get('rows', 0)} rows"
        + (
            f" from {window['first']} to {window['last']}"
            if window.get("first")
            else ""
        )
        + ".",
    ]
    if cur.get("bad_lines"):
        lines.append(
            f"Skipped {cur['bad_lines']} bad log lines of {cur['lines']}, "
            f"e.g. `{cur['bad_line_examples'][0]}`."
        )
    if result["reasons"]:
        lines += ["", *(f"- {r}" for r in result["reasons"])]
    scores = [*result["features"]]
    scores += [s for s in (result.get("prediction"), result.get("label")) if s]
    if scores:
        lines += [
            "",
            "| column | method | score | threshold | |",
            "|---|---|---:|---:|---|",
        ]
        lines += [_score_row(s) for s in _ordered(scores)[:MAX_ROWS]]
        if len(scores) > MAX_ROWS:
            lines.append(f"\n{len(scores) - MAX_ROWS} more in monitor.json.")
    lines += _live_lines(result.get("live") or {})
    if result.get("notes"):
        lines += ["", "Notes:", "", *(f"- {n}" for n in result["notes"])]
    lines += ["", f"Report: `{REPORT_FILE}` (deepchecks); scores: `{RESULT_FILE}`.", ""]
    return "\n".join(lines)


def _live_lines(live: Mapping[str, Any]) -> list[str]:
    if live.get("problem"):
        return ["", f"Labels could not be used: {live['problem']}."]
    if not live.get("metrics"):
        return []
    out = ["", f"Live metrics on {live['rows']} labelled rows:", ""]
    for name, value in live["metrics"].items():
        gates = [g for g in live.get("gates", []) if g["metric"] == name]
        verdicts = ", ".join(
            f"{g['rule']} {g['threshold']:g}: {'pass' if g['passed'] else '**fail**'}"
            for g in gates
        )
        out.append(
            f"- {name} = {value:.4f}" + (f" (gate {verdicts})" if verdicts else "")
        )
    return out


def write_summary(out: Path, text: str, env: Mapping[str, str]) -> Path:
    """``summary.md``, and appended to the job summary when there is one."""
    path = common.ensure_parent(out / SUMMARY_FILE)
    path.write_text(text, encoding="utf-8")
    if env.get(SUMMARY_ENV):
        with open(env[SUMMARY_ENV], "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return path


def write_metrics(out: Path, result: Mapping[str, Any], now: float) -> Path:
    """The latest scores as Prometheus gauges, by feature and model version."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    ref = result["reference"]
    base = {
        "model": str(ref.get("model") or ""),
        "model_version": str(ref.get("version") or ""),
    }
    labels = [*base, "feature", "method"]
    score = Gauge(
        "mlops_drift_score",
        "Drift score of a feature against the production model's train split",
        labels,
        registry=reg,
    )
    limit = Gauge(
        "mlops_drift_threshold",
        "Drift score above which the feature counts as drifted",
        labels,
        registry=reg,
    )
    over = Gauge(
        "mlops_drift_detected", "1 if the feature drifted", labels, registry=reg
    )
    for s in result["features"]:
        if s["score"] is None:
            continue
        key = {**base, "feature": s["name"], "method": s["method"]}
        score.labels(**key).set(s["score"])
        limit.labels(**key).set(s["threshold"])
        over.labels(**key).set(float(s["drifted"]))
    for what in ("prediction", "label"):
        s = result.get(what)
        if s and s["score"] is not None:
            g = Gauge(
                f"mlops_{what}_drift_score",
                f"Drift score of the {what}s",
                [*base, "method"],
                registry=reg,
            )
            g.labels(**base, method=s["method"]).set(s["score"])
    _run_gauges(reg, base, result, now)
    path = common.ensure_parent(out / METRICS_FILE)
    write_to_textfile(str(path), reg)
    return path


def _run_gauges(
    reg: Any, base: dict[str, str], result: Mapping[str, Any], now: float
) -> None:
    from prometheus_client import Gauge

    verdict = Gauge(
        "mlops_monitor_verdict",
        "1 for the verdict of the latest check",
        [*base, "verdict"],
        registry=reg,
    )
    for name in ("no drift", "drift", "could not check"):
        verdict.labels(**base, verdict=name).set(float(result["verdict"] == name))
    rows = Gauge("mlops_monitor_rows", "Rows compared", [*base, "data"], registry=reg)
    rows.labels(**base, data="reference").set(result["reference"].get("rows") or 0)
    rows.labels(**base, data="current").set(result["current"].get("rows") or 0)
    bad = Gauge(
        "mlops_monitor_bad_log_lines",
        "Prediction-log lines skipped",
        list(base),
        registry=reg,
    )
    bad.labels(**base).set(result["current"].get("bad_lines") or 0)
    live = Gauge(
        "mlops_live_metric",
        "A metric on the labelled current rows",
        [*base, "metric"],
        registry=reg,
    )
    for name, value in ((result.get("live") or {}).get("metrics") or {}).items():
        live.labels(**base, metric=name).set(value)
    when = Gauge(
        "mlops_monitor_last_run_timestamp_seconds",
        "When the check ran",
        list(base),
        registry=reg,
    )
    when.labels(**base).set(now)


def write_result(out: Path, result: Mapping[str, Any]) -> Path:
    """``monitor.json``."""
    path = out / RESULT_FILE
    common.write_json(path, result)
    return path
