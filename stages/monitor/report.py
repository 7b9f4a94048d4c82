"""The HTML report: deepchecks' own drift checks, on a sample.

deepchecks draws the plots a person reads (the two distributions of every
feature and of the predictions); the verdict and the scores in monitor.json
come from :mod:`stages.monitor.drift` on every row. deepchecks takes seconds
and gigabytes on a million rows, so it sees at most :data:`SAMPLE_ROWS` rows
of each side, drawn with the project's seed, and the page says so. Its
scores on the sample can differ a little from the ones on all rows.
"""

from __future__ import annotations

import html
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages import common, suites
from stages.monitor.drift import CATEGORICAL, kind_of

SAMPLE_ROWS = 10_000


def sample(
    frame: pd.DataFrame, rows: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """At most ``rows`` rows, and the positions they came from."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True), np.arange(len(frame))
    picked = np.sort(
        np.random.default_rng(seed).choice(len(frame), rows, replace=False)
    )
    return frame.iloc[picked].reset_index(drop=True), picked


def _dataset(frame: pd.DataFrame, categorical: list[str]) -> Any:
    suites.load_deepchecks()
    from deepchecks.tabular import Dataset

    return Dataset(frame, cat_features=categorical, label=None)


def write(
    path: Path,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    predictions: tuple[np.ndarray, np.ndarray] | None,
    *,
    seed: int,
    classes: list[Any] | None,
) -> str:
    """Run FeatureDrift (and PredictionDrift with predictions) on samples and
    write the page; return a one-line note on what it covers."""
    # A batch job's log wants no progress bars, nor deepchecks' notices.
    os.environ.setdefault("TQDM_DISABLE", "1")
    suites.load_deepchecks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import deepchecks
        from deepchecks.tabular import Suite
        from deepchecks.tabular.checks import FeatureDrift, PredictionDrift
    deepchecks.set_verbosity(logging.ERROR)

    ref, ref_at = sample(reference, SAMPLE_ROWS, seed)
    cur, cur_at = sample(current, SAMPLE_ROWS, seed + 1)
    cur.index += len(ref)  # distinct indexes: deepchecks would rename the rows
    categorical = [str(c) for c in ref.columns if kind_of(ref[c]) == CATEGORICAL]
    checks = [
        FeatureDrift(
            n_top_columns=len(ref.columns),
            sort_feature_by="drift score",
            n_samples=SAMPLE_ROWS,
        )
    ]
    kwargs: dict[str, Any] = {}
    if predictions is not None and len(predictions[1]) == len(current):
        checks.append(PredictionDrift(n_samples=SAMPLE_ROWS))
        ref_pred, cur_pred = predictions[0][ref_at], predictions[1][cur_at]
        kwargs = {"y_pred_train": ref_pred, "y_pred_test": cur_pred}
        if classes is not None:
            kwargs["model_classes"] = sorted(
                set(ref_pred) | set(cur_pred) | set(classes)
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Suite("mlops monitor: drift", *checks).run(
            _dataset(ref, categorical), _dataset(cur, categorical), **kwargs
        )
    which = "FeatureDrift and PredictionDrift" if kwargs else "FeatureDrift"
    note = (
        f"the HTML report is deepchecks' {which} on {len(ref)} of {len(reference)} "
        f"reference and {len(cur)} of {len(current)} current rows; the scores here "
        "are on all rows"
    )
    page = suites.suite_html(result)
    banner = f"<p><b>mlops monitor:</b> {html.escape(note)}.</p>"
    common.ensure_parent(path).write_text(
        page.replace("<body>", f"<body>{banner}", 1), encoding="utf-8"
    )
    return note


def write_unchecked(path: Path, verdict: str, reasons: list[str]) -> None:
    """A page for a check that could not be made, so the artifact is never absent."""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    common.ensure_parent(path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>mlops monitor"
        f"</title></head><body><h1>mlops monitor: {html.escape(verdict)}</h1>"
        f"<ul>{items}</ul></body></html>\n",
        encoding="utf-8",
    )
