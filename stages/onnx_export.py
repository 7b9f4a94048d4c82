"""ONNX export: convert the fitted pipeline with skl2onnx and check it row by row.

A pure core for the register stage (no MLflow, no files written): the pipeline,
its signature columns and the held-out test split in; the ONNX bytes and a
verdict out. The model server feeds the graph with :func:`feed`, the same
function the check uses, so what was verified is what is served.

The graph has one input per signature column, in signature order, each of
shape ``[None, 1]``: ``tensor(float)`` for numeric columns and
``tensor(string)`` for everything else (strings, booleans, categories).
skl2onnx may rename inputs (``mean radius`` -> ``mean_radius``): feed by
position. A missing string is fed as :data:`MISSING_STRING`, a missing number
as NaN. Outputs: the label first (``[None]``), then for classifiers
``probabilities`` (``[None, n_classes]``, no ZipMap); a regressor's single
output is ``[None, 1]``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from stages import common

VERIFIED = "verified"
MISMATCH = "mismatch"
UNSUPPORTED = "unsupported"
FLOAT = "tensor(float)"
STRING = "tensor(string)"
# Fixed opsets: the same pipeline always converts to the same bytes, and the
# graph never needs an onnxruntime newer than the one pinned beside skl2onnx.
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
# skl2onnx names the graph with a random UUID unless told otherwise.
GRAPH_NAME = "mlops"
# What a missing string is fed as. The preprocessor's categorical imputers
# match pd.NA, which a string tensor cannot hold; the converted copy matches
# this instead (so a real empty string counts as missing in the graph: the
# check on the test split catches that if the data has any).
MISSING_STRING = ""
# Regression tolerance. Inputs are float32 in the graph (about 7 significant
# digits) and linear models and tree sums accumulate in float32, which gives
# relative errors near 1e-6; 1e-4 leaves room for that, and an absolute floor
# of 1e-4 target standard deviations covers predictions near zero, while a
# wrong transformation moves predictions by far more than either.
RTOL = 1e-4
ATOL_PER_STD = 1e-4
SIGNATURE_NUMERIC = frozenset({"double", "float", "long", "integer"})
MAX_DETAIL = 240
CLASSIFIER_OUTPUTS = 2  # label, probabilities


@dataclass(frozen=True)
class Export:
    """The verdict on one conversion; ``onnx`` is None when nothing was converted."""

    status: str
    detail: str
    onnx: bytes | None = None
    convert_seconds: float = 0.0
    check_seconds: float = 0.0

    @property
    def sha256(self) -> str | None:
        """Hex sha256 of the exact ONNX bytes, or None without a graph."""
        return hashlib.sha256(self.onnx).hexdigest() if self.onnx is not None else None


def signature_columns(model_dir: str | Path) -> list[tuple[str, str]] | None:
    """(name, kind) of the MLflow model's signature inputs, in order; kind is
    :data:`FLOAT` or :data:`STRING`. None when the model has no column signature.
    """
    import json

    conf = yaml.safe_load((Path(model_dir) / "MLmodel").read_text(encoding="utf-8"))
    inputs = ((conf or {}).get("signature") or {}).get("inputs")
    if not inputs:
        return None
    specs = json.loads(inputs)
    if not all(isinstance(s, dict) and s.get("name") for s in specs):
        return None  # a tensor signature has no column names
    return [
        (str(s["name"]), FLOAT if s.get("type") in SIGNATURE_NUMERIC else STRING)
        for s in specs
    ]


def frame_columns(x: pd.DataFrame) -> list[tuple[str, str]]:
    """(name, kind) of a frame's columns, for models logged without a signature."""
    return [
        (
            str(c),
            FLOAT
            if pd.api.types.is_numeric_dtype(x[c].dtype)
            and not pd.api.types.is_bool_dtype(x[c].dtype)
            else STRING,
        )
        for c in x.columns
    ]


def feed(x: pd.DataFrame, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """onnxruntime feeds for ``x``, whose columns are in signature order.

    ``inputs`` are the session's inputs (``session.get_inputs()``): matched to
    columns by position, typed by the graph (float32 or string, ``[n, 1]``).
    """
    if len(inputs) != x.shape[1]:
        raise ValueError(f"the graph has {len(inputs)} inputs for {x.shape[1]} columns")
    out: dict[str, np.ndarray] = {}
    for i, inp in enumerate(inputs):
        col = x.iloc[:, i]
        if inp.type == STRING:
            values = [MISSING_STRING if pd.isna(v) else str(v) for v in col]
            out[inp.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            num = pd.to_numeric(col, errors="coerce").astype("float64")
            out[inp.name] = num.to_numpy(dtype=np.float32).reshape(-1, 1)
    return out


def _children(est: Any) -> Iterable[Any]:
    for attr in ("steps", "transformers_", "transformer_list"):
        for item in getattr(est, attr, None) or ():
            yield item[1]


def for_conversion(model: Any) -> Any:
    """A copy of ``model`` whose pd.NA imputers match :data:`MISSING_STRING`.

    skl2onnx converts string imputers only when the missing marker is a
    string; the fitted fill values are unchanged.
    """
    from sklearn.impute import SimpleImputer

    clone = copy.deepcopy(model)
    todo = [clone]
    while todo:
        est = todo.pop()
        if isinstance(est, SimpleImputer) and est.missing_values is pd.NA:
            est.missing_values = MISSING_STRING
        todo.extend(_children(est))
    return clone


def convert(model: Any, columns: Sequence[tuple[str, str]]) -> bytes:
    """Convert a fitted pipeline to ONNX bytes; skl2onnx's errors propagate."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.base import is_classifier

    types = {FLOAT: FloatTensorType, STRING: StringTensorType}
    initial = [(name, types[kind]([None, 1])) for name, kind in columns]
    clone = for_conversion(model)
    final = clone.steps[-1][1] if hasattr(clone, "steps") else clone
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    onx = convert_sklearn(
        clone,
        initial_types=initial,
        target_opset=TARGET_OPSET,
        options=options,
        name=GRAPH_NAME,
    )
    # skl2onnx lists the opsets in set order, which follows the hash seed:
    # sorted, the same model gives the same bytes in every process.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    return onx.SerializeToString()


def _contract_problem(session: Any, n_columns: int, n_classes: int | None) -> str:
    """Why the graph's inputs/outputs break the documented contract ('' if not)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != n_columns:
        return f"graph has {len(inputs)} inputs for {n_columns} signature columns"
    wrong = [i.name for i in inputs if i.type not in (FLOAT, STRING)]
    if wrong:
        return f"inputs of unexpected types: {', '.join(wrong)}"
    if n_classes is None:
        ok = len(outputs) == 1 and list(outputs[0].shape)[1:] == [1]
        return "" if ok else "a regressor's graph must have one [None, 1] output"
    shapes = [list(o.shape) for o in outputs]
    if len(shapes) != CLASSIFIER_OUTPUTS:
        return f"a classifier's graph has {len(shapes)} outputs, not label and proba"
    if len(shapes[0]) != 1 or shapes[1][1:] != [n_classes]:
        return f"a classifier's graph must output [None] and [None, {n_classes}]"
    return ""


def _agreement(
    task: str, expected: np.ndarray, got: np.ndarray, y: pd.Series | None
) -> tuple[np.ndarray, str]:
    """Per-row agreement and the tolerance used, as text."""
    if task == common.CLASSIFICATION:
        if expected.dtype.kind in "OUS" or got.dtype.kind in "OUS":
            return expected.astype(str) == got.astype(str), "exact labels"
        return expected == got, "exact labels"
    std = float(np.nanstd(y)) if y is not None and len(y) else 0.0
    atol = ATOL_PER_STD * (std if np.isfinite(std) and std > 0 else 1.0)
    close = np.isclose(got.astype(float), expected.astype(float), rtol=RTOL, atol=atol)
    return close, f"rtol {RTOL:g}, atol {atol:.2g}"


def compare(
    task: str, expected: Any, got: Any, y: pd.Series | None = None
) -> tuple[bool, str]:
    """Compare sklearn's and the graph's predictions on every row.

    Classification labels must be equal; regression values close within
    :data:`RTOL` and :data:`ATOL_PER_STD` x the target's standard deviation.
    """
    exp, act = np.asarray(expected).ravel(), np.asarray(got).ravel()
    if exp.shape != act.shape:
        return False, f"graph gave {act.size} predictions for {exp.size} rows"
    agree, rule = _agreement(task, exp, act, y)
    n = exp.size
    bad = np.flatnonzero(~agree)
    if bad.size == 0:
        spread = ""
        if task == common.REGRESSION and n:
            diff = np.abs(act.astype(float) - exp.astype(float)).max()
            spread = f", max |diff| {diff:.2g}"
        return True, f"{n} of {n} test rows agree ({rule}{spread})"
    first = int(bad[0])
    return False, (
        f"{bad.size} of {n} test rows differ ({rule}): first row {first} "
        f"predicted {act[first]!r} vs sklearn {exp[first]!r}"
    )


def run_graph(onnx: bytes, x: pd.DataFrame) -> tuple[Any, list[np.ndarray]]:
    """Load the graph in onnxruntime and predict ``x``: (session, outputs)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return session, session.run(None, feed(x, session.get_inputs()))


def _short(text: str) -> str:
    """One line for a tag, at most MAX_DETAIL characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3] + "..."


def _error(prefix: str, e: Exception) -> str:
    """An exception as one short line: its type and first sentence."""
    first = " ".join(str(e).split()).split(". ")[0]
    return _short(f"{prefix}{type(e).__name__}: {first}")


def export(
    model: Any,
    columns: Sequence[tuple[str, str]],
    test: pd.DataFrame,
    target: str,
    task: str,
) -> Export:
    """Convert ``model`` and check it on every row of ``test``; never raises.

    Anything skl2onnx or onnxruntime cannot handle is :data:`UNSUPPORTED` (no
    graph kept); predictions that disagree are :data:`MISMATCH` (the graph is
    kept for inspection, but only :data:`VERIFIED` graphs are served).
    """
    names = [name for name, _ in columns]
    missing = [n for n in names if n not in test.columns]
    if missing or test.empty:
        why = f"test split lacks {', '.join(missing)}" if missing else "no test rows"
        return Export(UNSUPPORTED, f"cannot check: {why}")
    start = time.perf_counter()
    try:
        onnx = convert(model, columns)
    except Exception as e:  # any converter failure means "not convertible"
        took = time.perf_counter() - start
        return Export(UNSUPPORTED, _error("", e), convert_seconds=took)
    converted = time.perf_counter()
    x = test[names]
    classes = getattr(model, "classes_", ())
    n_classes = len(classes) if task == common.CLASSIFICATION else None
    try:
        session, outputs = run_graph(onnx, x)
        problem = _contract_problem(session, len(names), n_classes)
    except Exception as e:  # a graph onnxruntime cannot run cannot be served
        problem = _error("onnxruntime cannot run the graph: ", e)
    convert_s = converted - start
    if problem:
        check_s = time.perf_counter() - converted
        return Export(UNSUPPORTED, _short(problem), None, convert_s, check_s)
    y = test[target] if target in test.columns else None
    ok, detail = compare(task, model.predict(x), outputs[0], y)
    if ok and n_classes is not None and hasattr(model, "predict_proba"):
        diff = np.abs(outputs[1] - model.predict_proba(x)).max()
        detail += f"; max |probability diff| {diff:.2g}"
    status = VERIFIED if ok else MISMATCH
    check_s = time.perf_counter() - converted
    return Export(status, _short(detail), onnx, convert_s, check_s)
