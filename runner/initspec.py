"""What `mlops init` writes: a commented mlops.yaml from a look at the data.

Pure: a DataFrame (the data, or a bounded sample of it) in, the spec's text out.
Every inference says in a comment which rule decided it, so a user can tell a
guess from a fact and change it. pandas is imported by the caller's command only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from runner.schema import schema
from runner.spec import nested_defaults

if TYPE_CHECKING:
    import pandas as pd

CLASSIFICATION, REGRESSION = "classification", "regression"
# A numeric target of whole numbers with at most this many distinct values is
# taken for class labels (0/1, ratings 1-5, ...); anything else is a quantity.
MAX_CLASSES = 20
# Text columns with at most this many distinct values get an `allowed` list.
MAX_ALLOWED = 20
# Slack on an observed share of missing values before the rule fails.
NULL_SLACK = 0.05
# Numeric bounds: the range seen, widened by this share of it on each side.
RANGE_SLACK = 0.1
N_ESTIMATORS = 200
# Gates: the candidate may be at most this much worse than production.
MAX_DROP = 0.02
METRICS = {
    CLASSIFICATION: ["accuracy", "balanced_accuracy", "f1", "roc_auc"],
    REGRESSION: ["r2", "mae", "rmse"],
}
ESTIMATORS = {
    CLASSIFICATION: "sklearn.ensemble.RandomForestClassifier",
    REGRESSION: "sklearn.ensemble.RandomForestRegressor",
}


@dataclass(frozen=True)
class Look:
    """What init read: the rows, and whether they are all of the file's."""

    frame: pd.DataFrame
    path: str  # relative to the repository, POSIX
    sampled: bool  # the file has more rows than these


@dataclass(frozen=True)
class Column:
    name: str
    rule: dict[str, Any]
    seen: str  # what was observed, for the comment above the rule
    drop: str = ""  # why preprocess should drop it, if it should


def safe_name(text: str, fallback: str) -> str:
    """A schema `name` (lowercase letters, digits, dashes) made from any text."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:40].rstrip("-")
    return name or fallback


def _flow(value: Any) -> str:
    """One YAML value on one line (flow style), quoted only where YAML needs it."""
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=10**9
    )
    return text.removesuffix("\n...\n").rstrip("\n")


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _round_out(x: float, up: bool) -> int | float:
    """x rounded away from the data to two significant digits: 58.2 -> 59."""
    if x == 0 or not math.isfinite(x):
        return 0
    exp = math.floor(math.log10(abs(x))) - 1
    step = 10.0**exp
    n = math.ceil(x / step) if up else math.floor(x / step)
    return _number(round(n * step, max(0, -exp)))


def _share(nulls: int, rows: int) -> str:
    return "none missing" if nulls == 0 else f"{nulls / rows:.1%} missing"


def infer_task(series: pd.Series) -> tuple[str, str]:
    """The task for a target column, and the reason, for the spec's comment."""
    import pandas as pd

    api = pd.api.types
    name, values = series.name, series.dropna()
    distinct = int(values.nunique())
    if api.is_bool_dtype(series.dtype):
        return CLASSIFICATION, f"{name!r} holds true/false values"
    if not api.is_numeric_dtype(series.dtype):
        return CLASSIFICATION, f"{name!r} holds text ({distinct} distinct values)"
    whole = bool((values == values.round()).all())
    if whole and distinct <= MAX_CLASSES:
        return CLASSIFICATION, (
            f"{name!r} holds {distinct} distinct whole numbers "
            f"(at most {MAX_CLASSES} are taken for classes)"
        )
    kind = "whole numbers" if whole else "numbers"
    return REGRESSION, f"{name!r} holds {kind} with {distinct} distinct values"


def _kind(series: pd.Series) -> str | None:
    import pandas as pd

    api, values = pd.api.types, series.dropna()
    if values.empty:
        return None
    if api.is_bool_dtype(series.dtype):
        return "boolean"
    if api.is_numeric_dtype(series.dtype):
        whole = api.is_integer_dtype(series.dtype) or (values == values.round()).all()
        return "integer" if whole else "float"
    if api.is_datetime64_any_dtype(series.dtype):
        return "datetime"
    return "category" if values.nunique() <= MAX_ALLOWED else "string"


def _is_row_number(values: pd.Series) -> bool:
    import pandas as pd

    if not pd.api.types.is_integer_dtype(values.dtype) or len(values) < 2:  # noqa: PLR2004
        return False
    ordered = values.sort_values().to_numpy()
    return bool((ordered[1:] - ordered[:-1] == 1).all())


def _bounds(values: pd.Series, kind: str) -> dict[str, int | float]:
    """min and max: the range seen, widened, rounded outwards."""
    low, high = float(values.min()), float(values.max())
    slack = RANGE_SLACK * ((high - low) or abs(high) or 1)
    # 0 when the values start near it (a count, a size), else the rounded minimum.
    near_zero = 0 <= low <= high - low
    least = 0 if near_zero else _round_out(low - slack, up=False)
    most = _round_out(high + slack, up=True)
    if kind == "integer":
        return {"min": math.floor(least), "max": math.ceil(most)}
    return {"min": least, "max": most}


def profile(series: pd.Series, *, target: bool, task: str) -> Column:
    """The rule for one column, from the values seen."""
    name, rows = str(series.name), len(series)
    values = series.dropna()
    nulls = rows - len(values)
    kind = _kind(series)
    if kind is None:
        return Column(name, {}, "every value missing", drop="every value is missing")
    rule: dict[str, Any] = {"type": kind}
    distinct = int(values.nunique())
    seen = f"{distinct} distinct values, {_share(nulls, rows)}"
    drop = ""
    labels = kind in ("category", "boolean") or (target and task == CLASSIFICATION)
    if labels and distinct <= max(MAX_ALLOWED, MAX_CLASSES):
        # Sorted by type first: a CSV column can mix numbers and text.
        rule["allowed"] = sorted(
            values.unique().tolist(), key=lambda v: (type(v).__name__, v)
        )
        seen = f"{distinct} values seen, {_share(nulls, rows)}"
    elif kind in ("integer", "float"):
        rule.update(_bounds(values, kind))
        low, high = _number(values.min()), _number(values.max())
        seen = f"{low} to {high} seen, {_share(nulls, rows)}"
    if not target and distinct == rows and rows > 1:
        if kind == "string" or (kind == "integer" and _is_row_number(values)):
            rule = {"type": kind, "unique": True}
            drop = "a different value on every row: an identifier, not a feature"
    share = math.ceil((nulls / rows + NULL_SLACK) * 100) / 100 if nulls else 0
    rule["max_null_share"] = min(1, share)
    return Column(name, rule, seen, drop)


def _header(look: Look, name: str) -> list[str]:
    return [
        f"# The spec of {name}: written by `mlops init` from {look.path}.",
        "# Each value is a starting point read off the data; edit any of them, then",
        "# `mlops run`. Every key and its default: the spec reference in the docs.",
        "version: 1",
        "",
    ]


def _project(name: str, look: Look, target: str, task: str, why: str) -> list[str]:
    other = REGRESSION if task == CLASSIFICATION else CLASSIFICATION
    return [
        "project:",
        f"  name: {name}",
        f"  description: {_flow(f'Predicts {target} from {look.path}.')}",
        f"  # {task}: {why}.",
        f"  # Set `{other}` if that is wrong.",
        f"  task: {task}",
        f"  target: {_flow(target)}",
        f"  seed: {schema()['$defs']['project']['properties']['seed']['default']}",
        "",
    ]


def _storage() -> list[str]:
    remote = nested_defaults("storage", "remote", None)
    mlflow = nested_defaults("storage", "mlflow", None)
    return [
        "# Data, models and DVC's run-cache go to the remote; runs and the model",
        "# registry to MLflow. Both live under .mlops/ here (git ignores it); point",
        "# them at shared storage (s3://..., https://...) for a team and CI.",
        "storage:",
        "  remote:",
        f"    name: {remote['name']}",
        f"    url: {_flow(remote['url'])}",
        "  mlflow:",
        f"    tracking_uri: {_flow(mlflow['tracking_uri'])}",
        "",
    ]


def _validate(look: Look, columns: Sequence[Column], rows: int) -> list[str]:
    out = [
        "  validate:",
        "    uses: validate",
        "    desc: Check the data before anything is trained on it.",
        "    needs: [ingest]",
        "    with:",
    ]
    if look.sampled:
        out += [
            f"      # From the first {rows} rows only (the file has more): every rule",
            "      # warns instead of failing until you have checked it on all rows.",
            f"      rows: {{min: {rows}}}",
        ]
    else:
        out += [
            f"      # {rows} rows now: fewer than half as many fails, as a cut-off",
            "      # export would.",
            f"      rows: {{min: {max(1, rows // 2)}}}",
        ]
    out += [
        "      # Each column's type as seen; numbers within the range seen,",
        f"      # widened by {RANGE_SLACK:.0%} of it each way and rounded outwards",
        "      # (from 0 when they start near it); text among the values seen;",
        f"      # missing values up to the share seen plus {NULL_SLACK}.",
        "      columns:",
    ]
    for col in columns:
        rule = dict(col.rule)
        if look.sampled:
            rule["severity"] = "warning"
        out += [f"        # {col.seen}", f"        {_flow(col.name)}: {_flow(rule)}"]
    out += ["      suites:", "        data_integrity: warning", ""]
    return out


def _split(frame: pd.DataFrame, target: str, task: str) -> tuple[dict[str, Any], str]:
    split = nested_defaults("with-preprocess", "split", None)
    if task == REGRESSION:
        return {**split, "method": "random"}, "random rows held out for the test"
    counts = frame[target].value_counts()
    test_rows = math.ceil(len(frame) * float(split["test_size"]))
    if counts.min() >= 2 and min(test_rows, len(frame) - test_rows) >= len(counts):  # noqa: PLR2004
        return split, "each class keeps its share in train and test"
    return {**split, "method": "random"}, "too few rows of some class to stratify"


def _pipeline(
    look: Look, source: str, target: str, task: str, columns: Sequence[Column]
) -> list[str]:
    frame = look.frame
    split, why_split = _split(frame, target, task)
    drops = [c for c in columns if c.drop]
    out = [
        "pipeline:",
        "  ingest:",
        "    uses: ingest",
        "    desc: Snapshot the raw data as Parquet under DVC.",
        "    with:",
        f"      source: {source}",
        "",
        *_validate(look, columns, len(frame)),
        "  preprocess:",
        "    uses: preprocess",
        "    desc: Split train and test; build the feature transformations.",
        "    needs: [validate]",
        "    with:",
        f"      # {why_split}",
        f"      split: {_flow(split)}",
        f"      numeric: {_flow(nested_defaults('with-preprocess', 'numeric', None))}",
        "      categorical: "
        + _flow(nested_defaults("with-preprocess", "categorical", None)),
    ]
    for col in drops:
        out.append(f"      # {col.name}: {col.drop}")
    if drops:
        out.append(f"      drop: {_flow([c.name for c in drops])}")
    out += [
        "",
        "  train:",
        "    uses: train",
        "    desc: Fit the model and log it to MLflow.",
        "    needs: [preprocess]",
        "    with:",
        f"      estimator: {ESTIMATORS[task]}",
        f"      params: {{n_estimators: {N_ESTIMATORS}}}",
        "",
        "  evaluate:",
        "    uses: evaluate",
        "    desc: Score the model on the held-out split and apply the gates.",
        "    needs: [train]",
        "    with:",
        f"      metrics: {_flow(METRICS[task])}",
        "",
        "  register:",
        "    uses: register",
        "    desc: Register the model version in MLflow as the candidate.",
        "    needs: [evaluate]",
        "",
    ]
    return out


def _gates(frame: pd.DataFrame, target: str, task: str) -> list[str]:
    if task == CLASSIFICATION:
        k = int(frame[target].nunique())
        floor = math.ceil(100 / k + 1) / 100
        first = [
            f"  # Guessing, or always answering the commonest class, scores 1/{k}.",
            "  - metric: balanced_accuracy",
            f"    min: {floor}",
        ]
        kept = "f1"
    else:
        first = [
            "  # Predicting the mean of the target for every row scores 0.",
            "  - metric: r2",
            "    min: 0",
        ]
        kept = "r2"
    return [
        "# A candidate that fails a gate is registered without the candidate alias",
        "# and `mlops promote` refuses it.",
        "gates:",
        *first,
        "  # At most this much worse than the production model on the same test",
        "  # rows (passes while there is no production model).",
        f"  - metric: {kept}",
        f"    max_drop: {MAX_DROP}",
        "",
    ]


def render(look: Look, target: str, name: str, task: str, why: str) -> str:
    """The whole mlops.yaml text: the same data gives the same bytes."""
    frame = look.frame
    source = safe_name(look.path.rsplit("/", 1)[-1].rsplit(".", 1)[0], "data")
    columns = [profile(frame[c], target=c == target, task=task) for c in frame.columns]
    lines = [
        *_header(look, name),
        *_project(name, look, target, task, why),
        *_storage(),
        "data:",
        f"  {source}:",
        f"    path: {_flow(look.path)}",
        "",
        *_pipeline(look, source, target, task, columns),
        *_gates(frame, target, task),
        "registry:",
        f"  model: {name}",
    ]
    return "\n".join(lines) + "\n"
