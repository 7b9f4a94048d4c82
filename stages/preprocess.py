"""Preprocess: split train/test and build the (unfitted) feature transformer.

The transformer is saved unfitted: train fits it inside one Pipeline with the
estimator, so the model that is served always carries its own preprocessing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from stages import common, run_then_leave

KIND = "preprocess"
SPLIT_METHODS = ("random", "stratified", "time")
NUMERIC_IMPUTE = ("mean", "median", "most_frequent", "none")
SCALERS = ("standard", "minmax", "robust", "none")
CATEGORICAL_IMPUTE = ("most_frequent", "constant", "none")
ENCODERS = ("onehot", "ordinal")
CONSTANT_FILL = "missing"
# A class needs a row on each side of a stratified split.
MIN_CLASS_ROWS = 2


def _choice(settings: Mapping[str, Any], key: str, allowed: tuple, default: str) -> str:
    value = settings.get(key, default)
    if value not in allowed:
        raise common.StageError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def split_data(
    df: pd.DataFrame,
    target: str,
    task: str,
    split: Mapping[str, Any],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into train and test frames as the spec says, seeded."""
    from sklearn.model_selection import train_test_split

    default = "stratified" if task == common.CLASSIFICATION else "random"
    method = _choice(split, "method", SPLIT_METHODS, default)
    test_size = float(split.get("test_size", 0.2))
    if not 0 < test_size < 1:
        raise common.StageError(f"split.test_size must be in (0, 1), not {test_size}")
    common.require_target(df.columns, target)
    if method == "time":
        col = split.get("time_column")
        if not col or col not in df.columns:
            raise common.StageError(
                f"split.method 'time' needs time_column naming a column (got {col!r})"
            )
        ordered = df.sort_values(col, kind="mergesort")
        cut = len(ordered) - max(1, round(len(ordered) * test_size))
        return ordered.iloc[:cut], ordered.iloc[cut:]
    stratify = None
    if method == "stratified":
        if task != common.CLASSIFICATION:
            raise common.StageError("stratified split needs a classification task")
        counts = df[target].value_counts()
        lonely = list(counts[counts < MIN_CLASS_ROWS].index)
        if lonely:
            raise common.StageError(f"cannot stratify: classes with one row: {lonely}")
        stratify = df[target]
    train, test = train_test_split(
        df, test_size=test_size, random_state=seed, stratify=stratify
    )
    return train, test


def feature_columns(
    df: pd.DataFrame, target: str, settings: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Group feature columns by dtype: numeric, categorical, passthrough, dropped."""
    drop = list(settings.get("drop") or [])
    passthrough = list(settings.get("passthrough") or [])
    for key, names in (("drop", drop), ("passthrough", passthrough)):
        if wrong := common.not_columns(names, df.columns):
            raise common.StageError(f"{key}: {wrong}")
    groups: dict[str, list[str]] = {
        "numeric": [],
        "categorical": [],
        "passthrough": passthrough,
        "ignored": [],
    }
    for col in df.columns:
        if col == target or col in drop or col in passthrough:
            continue
        dtype = df[col].dtype
        if pd.api.types.is_bool_dtype(dtype):
            groups["categorical"].append(col)
        elif pd.api.types.is_numeric_dtype(dtype):
            groups["numeric"].append(col)
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            groups["ignored"].append(col)  # no sklearn transformer takes datetimes
        else:
            groups["categorical"].append(col)
    return groups


def _numeric_pipeline(settings: Mapping[str, Any]):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        MinMaxScaler,
        RobustScaler,
        StandardScaler,
    )

    impute = _choice(settings, "impute", NUMERIC_IMPUTE, "median")
    scale = _choice(settings, "scale", SCALERS, "standard")
    steps = []
    if impute != "none":
        steps.append(("impute", SimpleImputer(strategy=impute)))
    scalers = {
        "standard": StandardScaler,
        "minmax": MinMaxScaler,
        "robust": RobustScaler,
    }
    if scale != "none":
        steps.append(("scale", scalers[scale]()))
    return Pipeline(steps) if steps else "passthrough"


def _categorical_pipeline(settings: Mapping[str, Any]):
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    impute = _choice(settings, "impute", CATEGORICAL_IMPUTE, "most_frequent")
    encode = _choice(settings, "encode", ENCODERS, "onehot")
    steps = []
    if impute != "none":
        # pd.NA matches both None (Parquet strings) and NaN (CSV) in object columns.
        fill = {"fill_value": CONSTANT_FILL} if impute == "constant" else {}
        steps.append(
            ("impute", SimpleImputer(missing_values=pd.NA, strategy=impute, **fill))
        )
    if encode == "onehot":
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    else:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=-1,
            encoded_missing_value=-2,
            dtype=np.float64,
        )
    steps.append(("encode", encoder))
    return Pipeline(steps)


def build_preprocessor(df: pd.DataFrame, target: str, settings: Mapping[str, Any]):
    """Build an unfitted ColumnTransformer for ``df``'s features from the spec."""
    from sklearn.compose import ColumnTransformer

    groups = feature_columns(df, target, settings)
    transformers = []
    if groups["numeric"]:
        transformers.append(
            (
                "numeric",
                _numeric_pipeline(settings.get("numeric") or {}),
                groups["numeric"],
            )
        )
    if groups["categorical"]:
        transformers.append(
            (
                "categorical",
                _categorical_pipeline(settings.get("categorical") or {}),
                groups["categorical"],
            )
        )
    if groups["passthrough"]:
        transformers.append(("passthrough", "passthrough", groups["passthrough"]))
    if not transformers:
        raise common.StageError("no feature columns left after drop")
    return ColumnTransformer(transformers, remainder="drop"), groups


def _run(params: dict[str, Any], stage_id: str, spec: dict[str, Any]) -> int:
    import joblib

    proj = common.project(params)
    settings = spec["with"]
    start = time.perf_counter()
    df = common.read_parquet(common.need(spec, "inputs", "data"))
    train, test = split_data(
        df, proj["target"], proj["task"], settings.get("split") or {}, int(proj["seed"])
    )
    preprocessor, groups = build_preprocessor(df, proj["target"], settings)
    common.write_parquet(train, common.need(spec, "outputs", "train"))
    common.write_parquet(test, common.need(spec, "outputs", "test"))
    out = common.ensure_parent(common.need(spec, "outputs", "preprocessor"))
    joblib.dump(preprocessor, out)
    if groups["ignored"]:
        common.say(KIND, f"ignoring datetime columns {groups['ignored']}")
    common.say(
        KIND,
        f"split {len(df)} rows into {len(train)} train / {len(test)} test; "
        f"{len(groups['numeric'])} numeric, {len(groups['categorical'])} categorical "
        f"features in {time.perf_counter() - start:.1f}s",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the preprocess stage named by ``argv[0]``."""
    return common.run_stage(KIND, argv, _run)


if __name__ == "__main__":
    run_then_leave(main)
