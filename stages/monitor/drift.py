"""The drift core: two DataFrames in, a score per column and a verdict out.

The methods are deepchecks' defaults, so its HTML report tells the same story,
but computed here with numpy on every row (deepchecks' own checks take seconds
and gigabytes on a million rows):

- numeric columns: the two-sample Kolmogorov-Smirnov statistic ``D``, the
  largest gap between the two empirical CDFs (0 same, 1 disjoint);
- categorical columns (non-numeric, or boolean): Cramer's V with the bias
  correction, on the two samples scaled to the same size, as deepchecks does,
  so that a large current batch is not read as "no association".

Nulls are left out of the scores and reported as shares. A column with fewer
than ``min_rows`` non-null values on either side is not scored, and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stages.monitor import DRIFT, NO_DRIFT, UNCHECKED

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KS = "kolmogorov-smirnov"
CRAMERS_V = "cramers-v"
METHODS = {NUMERIC: KS, CATEGORICAL: CRAMERS_V}


@dataclass(frozen=True)
class Thresholds:
    """``monitoring.drift_threshold``, its per-feature overrides, ``min_rows``."""

    default: float
    min_rows: int
    features: Mapping[str, float] = field(default_factory=dict)

    def of(self, name: str) -> float:
        return float(self.features.get(name, self.default))


@dataclass(frozen=True)
class Score:
    """One column's drift: the method, its score, and whether it is over."""

    name: str
    kind: str
    method: str
    score: float | None
    threshold: float
    drifted: bool
    reference_count: int
    current_count: int
    reference_null_share: float
    current_null_share: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The batch's verdict and the reasons behind it, one line each."""

    verdict: str
    reasons: tuple[str, ...]


def kind_of(series: pd.Series) -> str:
    """Numeric unless the column is boolean or not a number at all."""
    dtype = series.dtype
    api = pd.api.types
    return (
        NUMERIC
        if api.is_numeric_dtype(dtype) and not api.is_bool_dtype(dtype)
        else (CATEGORICAL)
    )


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov ``D`` (scipy's ks_2samp statistic).

    Between two distinct values of the smaller sample its CDF is flat and the
    other's only rises, so the largest gap lies at those values, just at or
    just before each: the larger sample is sorted once and searched only for
    them.
    """
    a, b = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if a.size > b.size:
        a, b = b, a
    u, counts = np.unique(a, return_counts=True)
    a_le = np.cumsum(counts) / a.size
    a_lt = a_le - counts / a.size
    b = np.sort(b)
    b_le = np.searchsorted(b, u, "right") / b.size
    b_lt = np.searchsorted(b, u, "left") / b.size
    return float(max(np.abs(a_le - b_le).max(), np.abs(a_lt - b_lt).max()))


def _shares(values: pd.Series) -> pd.Series:
    return values.value_counts(normalize=True, sort=False)


def cramers_v(reference: pd.Series, current: pd.Series) -> float:
    """Bias-corrected Cramer's V of "which sample" against the category.

    Both samples are scaled to the smaller one's size ``m``; with equal rows
    chi-squared is ``m * sum((p - q)**2 / (p + q))`` over the categories.
    """
    p, q = _shares(reference).align(_shares(current), fill_value=0.0)
    k = len(p)
    if k < 2:  # noqa: PLR2004 - one category on both sides: nothing moved
        return 0.0
    m = min(len(reference), len(current))
    n = 2 * m
    total = (p + q).to_numpy()
    diff = (p - q).to_numpy()
    phi2 = 0.5 * float(np.sum(diff**2 / total))
    # Bergsma's correction, r = 2 rows (reference, current).
    phi2corr = max(0.0, phi2 - (k - 1) / (n - 1))
    kcorr = k - (k - 1) ** 2 / (n - 1)
    rcorr = 2 - 1 / (n - 1)
    return float(np.sqrt(phi2corr / min(kcorr - 1, rcorr - 1)))


def _comparable(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, ...]:
    """Categories compare by value when both sides are numbers, else as text."""
    api = pd.api.types
    if api.is_numeric_dtype(reference.dtype) and api.is_numeric_dtype(current.dtype):
        return reference, current
    if api.is_object_dtype(reference.dtype) and api.is_object_dtype(current.dtype):
        return reference, current  # text on both sides already: no copies
    return reference.astype(str), current.astype(str)


def score_column(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    threshold: float,
    min_rows: int,
    *,
    kind: str | None = None,
) -> Score:
    """Score one column; ``kind`` defaults to the reference's."""
    kind = kind or kind_of(reference)
    ref, cur = reference.dropna(), current.dropna()
    base: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "method": METHODS[kind],
        "threshold": threshold,
        "reference_count": len(ref),
        "current_count": len(cur),
        "reference_null_share": _null_share(reference),
        "current_null_share": _null_share(current),
    }
    reason = _unscorable(ref, cur, kind, min_rows)
    if reason is not None:
        return Score(score=None, drifted=False, reason=reason, **base)
    if kind == NUMERIC:
        value = ks_statistic(ref.to_numpy(), cur.to_numpy())
    else:
        value = cramers_v(*_comparable(ref, cur))
    return Score(score=value, drifted=value > threshold, **base)


def _null_share(series: pd.Series) -> float:
    return float(series.isna().mean()) if len(series) else 0.0


def _unscorable(ref: pd.Series, cur: pd.Series, kind: str, min_rows: int) -> str | None:
    for side, values in (("current", cur), ("reference", ref)):
        if len(values) == 0:
            return f"no non-null values in the {side} data"
        if len(values) < min_rows:
            return (
                f"{len(values)} non-null values in the {side} data, fewer than "
                f"monitoring.min_rows ({min_rows})"
            )
    if kind == NUMERIC and kind_of(cur) != NUMERIC:
        return f"numeric in the reference, {cur.dtype} in the current data"
    return None


def batch_problems(
    reference: pd.DataFrame, current: pd.DataFrame, min_rows: int
) -> list[str]:
    """Why this pair cannot be compared at all; empty when it can.

    The current data must hold every column the model was trained on (extra
    columns are ignored), with a number where training had one.
    """
    for side, frame in (("current", current), ("reference", reference)):
        if len(frame) == 0:
            return [f"the {side} data is empty"]
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        return [
            "the current data's columns no longer match the training columns: "
            f"missing {', '.join(map(repr, missing))}"
        ]
    changed = [
        f"{c!r} ({reference[c].dtype} -> {current[c].dtype})"
        for c in reference.columns
        if kind_of(reference[c]) == NUMERIC
        and kind_of(current[c]) != NUMERIC
        and current[c].notna().any()
    ]
    if changed:
        return [
            f"columns that were numeric in training no longer are: {', '.join(changed)}"
        ]
    for side, frame in (("current", current), ("reference", reference)):
        if len(frame) < min_rows:
            return [
                f"the {side} data has {len(frame)} rows, fewer than "
                f"monitoring.min_rows ({min_rows})"
            ]
    if not any(current[c].notna().any() for c in reference.columns):
        return ["every value of the current data's feature columns is null"]
    return []


def check_features(
    reference: pd.DataFrame, current: pd.DataFrame, thresholds: Thresholds
) -> tuple[list[str], list[Score]]:
    """Batch problems (then no scores), else one score per training column."""
    problems = batch_problems(reference, current, thresholds.min_rows)
    if problems:
        return problems, []
    scores = [
        score_column(
            str(c), reference[c], current[c], thresholds.of(str(c)), thresholds.min_rows
        )
        for c in reference.columns
    ]
    return [], scores


def verdict(problems: list[str], scores: list[Score]) -> Verdict:
    """Drift if anything drifted; else "could not check" if anything could not
    be scored (never a false "no drift"); else no drift."""
    if problems:
        return Verdict(UNCHECKED, tuple(problems))
    drifted = [s for s in scores if s.drifted]
    if drifted:
        return Verdict(DRIFT, tuple(_over(s) for s in drifted))
    unscored = [s for s in scores if s.score is None]
    if unscored or not scores:
        why = [f"{s.name}: {s.reason}" for s in unscored] or ["nothing was scored"]
        return Verdict(UNCHECKED, tuple(why))
    return Verdict(NO_DRIFT, ())


def _over(score: Score) -> str:
    return f"{score.name}: {score.method} {score.score:.3f} > {score.threshold:g}"
