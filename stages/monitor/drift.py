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

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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
    return _kind_of_dtype(series.dtype)


def _kind_of_dtype(dtype: Any) -> str:
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


def cramers_v(reference: pd.Series, current: pd.Series) -> float:
    """Bias-corrected Cramer's V of "which sample" against the category.

    Both samples are scaled to the smaller one's size ``m``; with equal rows
    chi-squared is ``m * sum((p - q)**2 / (p + q))`` over the categories.
    """
    return _cramers_v(_counts(reference), _counts(current))


def _counts(values: pd.Series) -> pd.Series:
    """How often each value occurs, nulls left out; only values that occur
    (a pandas category's unused levels count as absent, as in text)."""
    counts = values.value_counts(dropna=True, sort=False)
    return (
        counts[counts > 0] if isinstance(values.dtype, pd.CategoricalDtype) else counts
    )


def _cramers_v(reference: pd.Series, current: pd.Series) -> float:
    """:func:`cramers_v` from each sample's counts per category."""
    p, q = (reference / reference.sum()).align(current / current.sum(), fill_value=0.0)
    k = len(p)
    if k < 2:  # noqa: PLR2004 - one category on both sides: nothing moved
        return 0.0
    m = int(min(reference.sum(), current.sum()))
    n = 2 * m
    total = (p + q).to_numpy()
    diff = (p - q).to_numpy()
    phi2 = 0.5 * float(np.sum(diff**2 / total))
    # Bergsma's correction, r = 2 rows (reference, current).
    phi2corr = max(0.0, phi2 - (k - 1) / (n - 1))
    kcorr = k - (k - 1) ** 2 / (n - 1)
    rcorr = 2 - 1 / (n - 1)
    return float(np.sqrt(phi2corr / min(kcorr - 1, rcorr - 1)))


def _as_text(counts: pd.Series) -> pd.Series:
    """The counts of the values written as text (``1`` and ``"1"`` merge)."""
    return counts.groupby(counts.index.astype(str), sort=False).sum()


@dataclass(frozen=True)
class _Side:
    """One side of a column, read once: its non-null values (numbers) or
    counts per category, how many there are, and the share of nulls."""

    dtype: Any
    count: int
    null_share: float
    numbers: np.ndarray | None = None
    counts: pd.Series | None = None


def _side(series: pd.Series, kind: str) -> _Side:
    size, dtype = len(series), series.dtype
    if kind == NUMERIC and isinstance(dtype, np.dtype) and dtype.kind in "fiu":
        values = series.to_numpy()
        if dtype.kind != "f":  # numpy integers have no nulls
            return _Side(dtype, size, 0.0, numbers=values)
        missing = np.isnan(values)
        nulls = int(missing.sum())
        kept = values[~missing] if nulls else values
        return _Side(dtype, size - nulls, nulls / size if size else 0.0, numbers=kept)
    if kind == NUMERIC:
        present = series.dropna()
        share = float(series.isna().mean()) if size else 0.0
        return _Side(dtype, len(present), share, numbers=present.to_numpy())
    counts = _counts(series)
    count = int(counts.sum())
    return _Side(dtype, count, (size - count) / size if size else 0.0, counts=counts)


def _comparable(ref: _Side, cur: _Side) -> tuple[pd.Series, pd.Series]:
    """Categories compare by value when both sides are numbers, else as text."""
    api = pd.api.types
    assert ref.counts is not None and cur.counts is not None  # noqa: S101 - categorical
    if api.is_numeric_dtype(ref.dtype) and api.is_numeric_dtype(cur.dtype):
        return ref.counts, cur.counts
    if api.is_object_dtype(ref.dtype) and api.is_object_dtype(cur.dtype):
        return ref.counts, cur.counts  # text on both sides already
    return _as_text(ref.counts), _as_text(cur.counts)


def score_column(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    threshold: float,
    min_rows: int,
    *,
    kind: str | None = None,
) -> Score:
    """Score one column; ``kind`` defaults to the reference's.

    Each side is read once (:func:`_side`): a float column's nulls are found
    with one ``isnan`` and no copy is made when there are none, and a text
    column is counted by category once, not copied without its nulls first.
    """
    kind = kind or kind_of(reference)
    ref, cur = _side(reference, kind), _side(current, kind)
    base: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "method": METHODS[kind],
        "threshold": threshold,
        "reference_count": ref.count,
        "current_count": cur.count,
        "reference_null_share": ref.null_share,
        "current_null_share": cur.null_share,
    }
    reason = _unscorable(ref, cur, kind, min_rows)
    if reason is not None:
        return Score(score=None, drifted=False, reason=reason, **base)
    if kind == NUMERIC:
        assert ref.numbers is not None and cur.numbers is not None  # noqa: S101
        value = ks_statistic(ref.numbers, cur.numbers)
    else:
        value = _cramers_v(*_comparable(ref, cur))
    return Score(score=value, drifted=value > threshold, **base)


def _unscorable(ref: _Side, cur: _Side, kind: str, min_rows: int) -> str | None:
    for side, values in (("current", cur), ("reference", ref)):
        if values.count == 0:
            return f"no non-null values in the {side} data"
        if values.count < min_rows:
            return (
                f"{values.count} non-null values in the {side} data, fewer than "
                f"monitoring.min_rows ({min_rows})"
            )
    if kind == NUMERIC and _kind_of_dtype(cur.dtype) != NUMERIC:
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

    def one(column: Any) -> Score:
        name = str(column)
        return score_column(
            name, reference[column], current[column], thresholds.of(name),
            thresholds.min_rows,
        )  # fmt: skip

    # numpy sorts without the GIL: the columns' sorts run on every core.
    workers = min(len(reference.columns), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return [], list(pool.map(one, reference.columns))


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
