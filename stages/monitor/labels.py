"""Labels, when they arrive: joined to the logged rows, then label drift and
the live metrics beside the gates' absolute thresholds.

``monitoring.labels`` names a source under ``data:`` with a ``request_id``
column, the target column, and optionally ``row`` (the input's position in
its request; 0 when absent). A ``--current`` file that holds the target
column is labelled already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from stages import common
from stages.monitor.current import REQUEST_ID, ROW


def join(
    keys: pd.DataFrame, predictions: pd.Series, labels: pd.DataFrame, target: str
) -> pd.DataFrame:
    """The labelled current rows: ``label`` and ``prediction`` columns."""
    for column in (REQUEST_ID, target):
        if column not in labels.columns:
            raise common.StageError(
                f"the labels source has no {column!r} column (columns: "
                f"{', '.join(map(str, labels.columns[:10]))})"
            )
    truth = pd.DataFrame(
        {
            REQUEST_ID: labels[REQUEST_ID].astype(str),
            ROW: labels[ROW].astype(int) if ROW in labels.columns else 0,
            "label": labels[target],
        }
    ).drop_duplicates([REQUEST_ID, ROW], keep="last")
    asked = keys.assign(prediction=predictions.to_numpy())
    return asked.merge(truth, on=[REQUEST_ID, ROW], how="inner")


def live_metrics(
    task: str, labelled: pd.DataFrame, gates: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The gates' metrics on the labelled rows (those computable from labels
    and predictions alone) and each absolute gate's verdict on them."""
    names = [str(g["metric"]) for g in gates] or list(common.DEFAULT_METRICS[task])
    rows = labelled.dropna(subset=["label", "prediction"])
    metrics = (
        common.compute_metrics(task, names, rows["label"], rows["prediction"])
        if (len(rows))
        else {}
    )
    verdicts = []
    for g in gates:
        value = metrics.get(str(g["metric"]))
        for rule in ("min", "max"):
            if rule in g and value is not None:
                passed = value >= g[rule] if rule == "min" else value <= g[rule]
                verdicts.append(
                    {
                        "metric": g["metric"],
                        "rule": rule,
                        "threshold": g[rule],
                        "value": value,
                        "passed": bool(passed),
                    }
                )
    return {"rows": len(rows), "metrics": metrics, "gates": verdicts}
