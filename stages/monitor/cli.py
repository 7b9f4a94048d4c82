"""``python -m stages.monitor`` (``mlops monitor``): one drift check.

The runner resolves ``monitoring:`` (the schema's defaults, the sources it
names, ``deploy.prediction_log.path``) and passes it as ``--settings`` JSON:
``{"drift_threshold", "min_rows", "features", "window", "log_dir",
"current": {"name", "source"} | null, "labels": {"name", "source"} | null}``.

Exit codes: 0 no drift, 3 drift, 4 could not check (the reason is in
monitor.json and on stderr), 1 the command failed (a bad flag, an unreadable
``--current`` file), as :data:`stages.monitor.EXIT_CODES` says.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from stages import common, lookups
from stages.monitor import (
    DRIFT,
    EXIT_CODES,
    EXIT_FAILED,
    KIND,
    UNCHECKED,
    drift,
    outputs,
)
from stages.monitor import current as cur_mod
from stages.monitor import reference as ref_mod
from stages.monitor.drift import CATEGORICAL, NUMERIC, Score


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stages.monitor")
    ap.add_argument("--settings", required=True, help="monitoring settings (JSON)")
    ap.add_argument("--current", help="a CSV, Parquet or JSON file to check instead")
    ap.add_argument("--output", default=".mlops/monitor", help="folder for the outputs")
    ap.add_argument("--since", help="only log entries after this (7d, or ISO time)")
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report")
    return ap.parse_args(argv)


def thresholds(settings: Mapping[str, Any]) -> drift.Thresholds:
    features = {
        str(name): float(conf["threshold"])
        for name, conf in (settings.get("features") or {}).items()
        if (conf or {}).get("threshold") is not None
    }
    return drift.Thresholds(
        float(settings["drift_threshold"]), int(settings["min_rows"]), features
    )


def read_current(
    args: argparse.Namespace, settings: Mapping[str, Any]
) -> cur_mod.Batch:
    """``--current``, else ``monitoring.current``, else the prediction log."""
    if args.current:
        return cur_mod.read_file(Path(args.current))
    if settings.get("current"):
        return cur_mod.read_source(
            settings["current"]["name"], settings["current"]["source"]
        )
    since = cur_mod.since_time(args.since or settings.get("window"), datetime.now(UTC))
    return cur_mod.read_log(str(settings["log_dir"]), since)


def _predictions(
    model: Any, ident: ref_mod.Identity, features: pd.DataFrame, batch: cur_mod.Batch
) -> tuple[Any, str | None]:
    """The current predictions: logged answers of the production version, else
    the model's own; and a note when only part of the log qualifies."""
    if batch.predictions is None:
        return model.predict(batch.frame[list(features.columns)]), None
    versions = batch.versions if batch.versions is not None else pd.Series(dtype=str)
    mine = (versions == ident.version).to_numpy()
    note = None
    if not mine.all():
        note = (
            f"prediction drift compares the {int(mine.sum())} of {len(mine)} "
            f"logged rows answered by version {ident.version}"
        )
    return batch.predictions[mine].to_numpy(), note


def _kind(params: Mapping[str, Any]) -> str:
    """How predictions and labels are compared: classes, or numbers."""
    task = common.project(params)["task"]
    return CATEGORICAL if task == common.CLASSIFICATION else NUMERIC


def prediction_score(
    params: Mapping[str, Any],
    ident: ref_mod.Identity,
    features: pd.DataFrame,
    batch: cur_mod.Batch,
    limits: drift.Thresholds,
) -> tuple[Score, list[str], Any]:
    """Prediction drift: the production model on the reference against the
    current answers. Returns the score, notes, and both prediction arrays."""
    kind = _kind(params)
    empty = pd.Series(dtype=float)
    try:
        model = ref_mod.load_model(params, ident)
    except lookups.faults() as e:  # the registry failed: a failure, not a verdict
        raise lookups.failure(
            e, f"downloading models:/{ident.model}/{ident.version}"
        ) from e
    try:
        ref_pred = model.predict(features)
        cur_pred, note = _predictions(model, ident, features, batch)
    except Exception as e:
        why = f"the production model could not predict: {e}"
        blank = drift.score_column(
            "prediction", empty, empty, limits.default, 1, kind=kind
        )
        return Score(**{**blank.to_dict(), "reason": why}), [], None
    score = drift.score_column(
        "prediction",
        pd.Series(ref_pred),
        pd.Series(cur_pred),
        limits.default,
        limits.min_rows,
        kind=kind,
    )
    return score, [note] if note else [], (ref_pred, cur_pred)


def label_check(
    params: Mapping[str, Any],
    settings: Mapping[str, Any],
    ref: pd.DataFrame,
    batch: cur_mod.Batch,
    *,
    predictions: Any,
    limits: drift.Thresholds,
) -> tuple[Score | None, dict[str, Any] | None]:
    """Label drift and live metrics, when labels exist; else (None, None)."""
    from stages.monitor import labels

    proj = common.project(params)
    target, task = proj["target"], proj["task"]
    all_pred = batch.predictions
    if all_pred is None and predictions is not None:
        all_pred = pd.Series(predictions[1])
    if target in batch.frame.columns and all_pred is not None:
        labelled = pd.DataFrame(
            {"label": batch.frame[target].to_numpy(), "prediction": all_pred.to_numpy()}
        )
    elif settings.get("labels") and batch.keys is not None and all_pred is not None:
        try:  # labels arrive late, or not yet: that is no reason to fail the check
            source = cur_mod.read_source(
                settings["labels"]["name"], settings["labels"]["source"]
            )
            labelled = labels.join(batch.keys, all_pred, source.frame, target)
        except common.StageError as e:
            return None, {"rows": 0, "metrics": {}, "gates": [], "problem": str(e)}
    else:
        return None, None
    score = drift.score_column(
        "label",
        ref[target],
        labelled["label"],
        limits.default,
        limits.min_rows,
        kind=_kind(params),
    )
    return score, labels.live_metrics(task, labelled, params.get("gates") or [])


def load_reference(
    params: Mapping[str, Any], client: Any, root: Path
) -> tuple[dict[str, Any], Any, pd.DataFrame | None, list[str]]:
    """What monitor.json says about the reference, its identity, its split, and
    why there is none (then the split is None)."""
    found: dict[str, Any] = {"rows": None, "source": None}
    try:
        ident = ref_mod.identity(client, params)
        found.update(ident.to_dict())
        ref, found["source"] = ref_mod.load_split(root, ident)
    except ref_mod.Missing as e:
        return found, None, None, [f"reference: {e}"]
    found["rows"] = len(ref)
    return found, ident, ref, []


def check(
    params: Mapping[str, Any],
    settings: Mapping[str, Any],
    batch: cur_mod.Batch,
    client: Any,
    root: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare; return monitor.json's content and what the report needs."""
    limits = thresholds(settings)
    found, ident, ref, problems = load_reference(params, client, root)
    scores: list[Score] = []
    extra: dict[str, Any] = {"prediction": None, "label": None, "live": None}
    extra["notes"] = []
    frames: dict[str, Any] = {}
    if ref is not None:
        target = common.project(params)["target"]
        features = ref_mod.features_of(ref, target, ref_mod.model_inputs(ident))
        problems, scores = drift.check_features(features, batch.frame, limits)
        extra["notes"] += _unknown_overrides(limits, features)
    judged = list(scores)
    if ref is not None and not problems:
        pred, notes, both = prediction_score(params, ident, features, batch, limits)
        label, live = label_check(
            params, settings, ref, batch, predictions=both, limits=limits
        )
        label_dict = label.to_dict() if label else None
        extra.update(prediction=pred.to_dict(), live=live, label=label_dict)
        extra["notes"] += notes
        judged.append(pred)
        frames = {
            "reference": features,
            "current": batch.frame[list(features.columns)],
            "predictions": both,
            "classes": _classes(params, ref),
        }
    verdict, reasons = _verdict(problems, judged, extra)
    limits_out = {"default": limits.default, "min_rows": limits.min_rows}
    result = {
        "verdict": verdict,
        "exit_code": EXIT_CODES[verdict],
        "reasons": reasons,
        "checked_at": datetime.now(UTC).isoformat(),
        "reference": found,
        "current": batch.summary(),
        "thresholds": {**limits_out, "features": dict(limits.features)},
        "features": [s.to_dict() for s in scores],
        **extra,
    }
    return result, frames


def _unknown_overrides(limits: drift.Thresholds, features: pd.DataFrame) -> list[str]:
    unknown = sorted(set(limits.features) - {str(c) for c in features.columns})
    if not unknown:
        return []
    names = ", ".join(unknown)
    return [f"monitoring.features names columns the model does not read: {names}"]


def _classes(params: Mapping[str, Any], ref: pd.DataFrame) -> list[Any] | None:
    proj = common.project(params)
    if proj["task"] != common.CLASSIFICATION or proj["target"] not in ref.columns:
        return None
    return sorted(ref[proj["target"]].dropna().unique().tolist())


def _verdict(
    problems: list[str], scores: list[Score], extra: Mapping[str, Any]
) -> tuple[str, list[str]]:
    """The features' and prediction's verdict; a drifted label or a live metric
    failing an absolute gate makes it drift too."""
    judged = drift.verdict(problems, scores)
    more = [] if problems else _label_reasons(extra)
    if not more:
        return judged.verdict, list(judged.reasons)
    drifted = list(judged.reasons) if judged.verdict == DRIFT else []
    return DRIFT, drifted + more


def _label_reasons(extra: Mapping[str, Any]) -> list[str]:
    out = []
    label = extra.get("label")
    if label and label["drifted"]:
        out.append(
            f"label: {label['method']} {label['score']:.3f} > {label['threshold']:g}"
        )
    for g in (extra.get("live") or {}).get("gates", []):
        if not g["passed"]:
            out.append(
                f"live {g['metric']} {g['value']:.4f} fails the gate's "
                f"{g['rule']} {g['threshold']:g}"
            )
    return out


def write_outputs(
    out: Path,
    result: dict[str, Any],
    frames: Mapping[str, Any],
    args: argparse.Namespace,
    seed: int,
) -> None:
    """The report (or a page saying why there is none), then the rest."""
    page = out / outputs.REPORT_FILE
    if args.no_report:
        result["notes"].append("no HTML report (--no-report)")
        page.unlink(missing_ok=True)  # never leave an older run's page beside this one
    elif not frames:
        from stages.monitor import report

        report.write_unchecked(page, result["verdict"], result["reasons"])
    else:
        from stages.monitor import report

        try:
            note = report.write(
                page,
                frames["reference"],
                frames["current"],
                frames["predictions"],
                seed=seed,
                classes=frames["classes"],
            )
            result["notes"].append(note)
        except Exception as e:
            result["notes"].append(f"the deepchecks report failed: {e}")
            report.write_unchecked(
                page, result["verdict"], [*result["reasons"], str(e)]
            )
    outputs.write_result(out, result)
    outputs.write_summary(out, outputs.markdown(result), os.environ)
    outputs.write_metrics(out, result, time.time())


def _say(result: Mapping[str, Any], out: Path) -> None:
    ref, cur = result["reference"], result["current"]
    common.say(
        KIND,
        f"reference: {ref.get('model')} version {ref.get('version')}, "
        f"{ref.get('rows')} rows from {ref.get('source')}; current: "
        f"{cur['source']}, {cur['rows']} rows",
    )
    if cur["bad_lines"]:
        common.warn(
            KIND,
            f"skipped {cur['bad_lines']} bad log lines, e.g. "
            f"{cur['bad_line_examples'][0]}",
        )
    tell = common.warn if result["verdict"] == UNCHECKED else common.say
    for reason in result["reasons"]:
        tell(KIND, reason)
    names = [outputs.SUMMARY_FILE, outputs.METRICS_FILE]
    names += [outputs.REPORT_FILE] if (out / outputs.REPORT_FILE).exists() else []
    common.say(
        KIND,
        f"{result['verdict']} (exit {result['exit_code']}); wrote "
        f"{out / outputs.RESULT_FILE}, {', '.join(names)} beside it",
    )


def main(argv: list[str] | None = None) -> int:
    """One drift check; the exit code says its verdict (module docstring)."""
    args = parse(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        settings = json.loads(args.settings)
        params = common.load_params()
        batch = read_current(args, settings)  # before MLflow: a bad file fails fast
        import mlflow

        mlflow.set_tracking_uri(common.tracking_uri(params))
        out = Path(args.output)
        result, frames = check(
            params, settings, batch, mlflow.MlflowClient(), Path.cwd()
        )
        write_outputs(out, result, frames, args, int(common.project(params)["seed"]))
    except common.StageError as e:
        common.warn(KIND, str(e))
        return EXIT_FAILED
    _say(result, out)
    return int(result["exit_code"])
