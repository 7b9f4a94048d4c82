"""The ONNX conversion and check behind the register stage, on tiny DataFrames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from stages import common, onnx_export, preprocess

MESSY = {"categorical": {"impute": "most_frequent", "encode": "onehot"}}


def _frame(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Numeric and string columns with missing values, three kinds of target."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    size = rng.normal(10, 3, n)
    label = np.where(colour == "red", "hot", np.where(size > 11, "big", "small"))
    colour[rng.random(n) < 0.15] = None
    size[rng.random(n) < 0.15] = np.nan
    return pd.DataFrame(
        {
            "mean size": size,  # a space: skl2onnx renames the input
            "colour": colour,
            "count": rng.integers(0, 5, n),
            "shape": rng.choice(["round", "square"], n),
            "label": label,  # three string classes
            "flag": (label == "hot").astype(int),
            "amount": np.nan_to_num(size, nan=10.0) * 3 + (colour == "red") * 5,
        }
    )


TARGETS = ("label", "flag", "amount")


def _fit(df: pd.DataFrame, target: str, estimator, settings=MESSY):
    frame = df.drop(columns=[t for t in TARGETS if t != target])
    pre, _ = preprocess.build_preprocessor(frame, target, settings)
    x, y = common.split_xy(frame, target)
    return common.build_pipeline(pre, estimator).fit(x, y), frame


def _export(model, frame: pd.DataFrame, target: str, task: str):
    x = frame.drop(columns=[target])
    return onnx_export.export(model, onnx_export.frame_columns(x), frame, target, task)


def _estimator(dotted: str, **params):
    return common.import_estimator(dotted)(**params)


CASES = [
    ("sklearn.ensemble.RandomForestClassifier", "flag", "classification"),
    ("sklearn.linear_model.LogisticRegression", "label", "classification"),
    ("sklearn.linear_model.Ridge", "amount", "regression"),
]


@pytest.mark.parametrize(("dotted", "target", "task"), CASES)
def test_pipelines_convert_and_agree_on_every_row(dotted, target, task) -> None:
    params = {"random_state": 0, "n_estimators": 20} if "Forest" in dotted else {}
    train, test = _frame(seed=0), _frame(n=90, seed=1)
    model, _ = _fit(train, target, _estimator(dotted, **params))
    test = test.drop(columns=[t for t in TARGETS if t != target])
    result = _export(model, test, target, task)
    assert result.status == onnx_export.VERIFIED, result.detail
    assert result.detail.startswith("90 of 90 test rows agree")
    assert result.sha256 == hashlib.sha256(result.onnx).hexdigest()
    assert result.convert_seconds > 0 and result.check_seconds > 0

    graph = onnx.load_from_string(result.onnx).graph
    # One input per column, in the frame's order, [None, 1], float or string.
    assert [i.name for i in graph.input] == ["mean_size", "colour", "count", "shape"]
    elem = onnx.TensorProto
    assert [i.type.tensor_type.elem_type for i in graph.input] == [
        elem.FLOAT,
        elem.STRING,
        elem.FLOAT,
        elem.STRING,
    ]
    for i in graph.input:
        dims = i.type.tensor_type.shape.dim
        assert len(dims) == 2 and dims[1].dim_value == 1 and not dims[0].dim_value

    # What onnxruntime returns is what sklearn predicts, row by row.
    x = test.drop(columns=[target])
    session, outputs = onnx_export.run_graph(result.onnx, x)
    names = [o.name for o in session.get_outputs()]
    if task == "classification":
        assert names == ["label", "probabilities"]
        np.testing.assert_array_equal(outputs[0], model.predict(x))
        assert outputs[1].shape == (90, len(model.classes_))
        np.testing.assert_allclose(outputs[1], model.predict_proba(x), atol=1e-5)
    else:
        assert len(names) == 1 and outputs[0].shape == (90, 1)
        np.testing.assert_allclose(outputs[0].ravel(), model.predict(x), rtol=1e-4)


def test_conversion_is_byte_for_byte_deterministic() -> None:
    est = _estimator("sklearn.ensemble.RandomForestClassifier", n_estimators=5)
    model, frame = _fit(_frame(), "flag", est.set_params(random_state=0))
    first = _export(model, frame, "flag", "classification")
    again = _export(model, frame, "flag", "classification")
    assert first.onnx is not None and first.onnx == again.onnx
    assert onnx.load_from_string(first.onnx).graph.name == onnx_export.GRAPH_NAME


def test_the_model_itself_is_not_touched_by_conversion() -> None:
    model, frame = _fit(_frame(), "flag", _estimator("sklearn.linear_model.Ridge"))
    onnx_export.convert(model, onnx_export.frame_columns(frame.drop(columns="flag")))
    imputer = model[0].named_transformers_["categorical"].named_steps["impute"]
    assert imputer.missing_values is pd.NA


def _with_spline(df: pd.DataFrame, target: str):
    """A pipeline whose preprocessing ends in a SplineTransformer (no converter)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import SplineTransformer

    frame = df.drop(columns=[t for t in TARGETS if t != target])
    pre, _ = preprocess.build_preprocessor(frame, target, MESSY)
    pre = Pipeline([("columns", pre), ("spline", SplineTransformer())])
    x, y = common.split_xy(frame, target)
    lr = _estimator("sklearn.linear_model.LogisticRegression")
    return common.build_pipeline(pre, lr).fit(x, y), frame


@pytest.mark.parametrize("culprit", ["DummyClassifier", "SplineTransformer"])
def test_unconvertible_pipelines_are_unsupported_not_errors(culprit) -> None:
    if culprit == "DummyClassifier":
        dummy = _estimator("sklearn.dummy.DummyClassifier")
        model, frame = _fit(_frame(), "flag", dummy)
    else:
        model, frame = _with_spline(_frame(), "flag")
    assert len(model.predict(frame)) == len(frame)  # a working sklearn model
    result = _export(model, frame, "flag", "classification")
    assert result.status == onnx_export.UNSUPPORTED
    assert culprit in result.detail and "\n" not in result.detail
    assert len(result.detail) <= onnx_export.MAX_DETAIL
    assert result.onnx is None and result.sha256 is None


def test_a_graph_that_disagrees_is_a_mismatch() -> None:
    # Without an imputer the encoder learns None as a category of its own; the
    # graph sees the empty string, an unknown category: rows with a missing
    # colour are predicted differently.
    settings = {"categorical": {"impute": "none", "encode": "onehot"}}
    lr = _estimator("sklearn.linear_model.LogisticRegression")
    model, frame = _fit(_frame(), "label", lr, settings)
    result = _export(model, frame, "label", "classification")
    assert result.status == onnx_export.MISMATCH
    assert result.onnx is not None  # kept for inspection
    n_bad = int(result.detail.split(" of ")[0])
    x = frame.drop(columns="label")
    _, outputs = onnx_export.run_graph(result.onnx, x)
    differ = np.flatnonzero(outputs[0] != model.predict(x))
    assert n_bad == len(differ) > 0
    assert x["colour"].iloc[differ].isna().all()
    first = differ[0]
    assert f"first row {first} predicted '{outputs[0][first]}'" in result.detail


def test_tampered_graph_is_caught_by_the_check() -> None:
    model, frame = _fit(_frame(), "amount", _estimator("sklearn.linear_model.Ridge"))
    good = _export(model, frame, "amount", "regression")
    proto = onnx.load_from_string(good.onnx)
    regressor = next(n for n in proto.graph.node if n.op_type == "LinearRegressor")
    intercepts = next(a for a in regressor.attribute if a.name == "intercepts")
    intercepts.floats[0] += 0.5
    x = frame.drop(columns="amount")
    _, outputs = onnx_export.run_graph(proto.SerializeToString(), x)
    ok, detail = onnx_export.compare(
        "regression", model.predict(x), outputs[0], frame["amount"]
    )
    assert not ok and detail.startswith(f"{len(x)} of {len(x)} test rows differ")


def test_regression_tolerance_is_relative_and_scaled_by_the_target() -> None:
    y = pd.Series([0.0, 100.0, 200.0])  # std about 82
    expected = np.array([0.0, 100.0, 200.0])
    within = expected + np.array([0.005, 0.005, 0.02])  # atol 8e-3, rtol 1e-4
    ok, detail = onnx_export.compare("regression", expected, within, y)
    assert ok, detail
    outside = expected + np.array([0.0, 0.0, 0.05])
    ok, detail = onnx_export.compare("regression", expected, outside, y)
    assert not ok and "1 of 3 test rows differ" in detail and "first row 2" in detail
    ok, detail = onnx_export.compare("classification", [1, 0], [1, 1])
    assert not ok and detail.startswith("1 of 2 test rows differ")
    assert not onnx_export.compare("classification", ["a"], ["a", "b"])[0]


def test_feed_orders_by_position_and_marks_missing_strings() -> None:
    class Inp:
        def __init__(self, name: str, type_: str) -> None:
            self.name, self.type = name, type_

    x = pd.DataFrame({"b": ["x", None], "a": [1, np.nan]})
    out = onnx_export.feed(
        x, [Inp("b_", onnx_export.STRING), Inp("a_", "tensor(float)")]
    )
    assert out["b_"].tolist() == [["x"], [onnx_export.MISSING_STRING]]
    assert out["a_"].dtype == np.float32 and out["a_"].shape == (2, 1)
    assert np.isnan(out["a_"][1, 0])
    with pytest.raises(ValueError, match="2 inputs for 1 columns"):
        onnx_export.feed(x[["a"]], [Inp("b", "x"), Inp("a", "y")])


def test_signature_columns_follow_the_mlmodel(tmp_path: Path) -> None:
    from mlflow.models import infer_signature

    x = pd.DataFrame({"z": [1.5], "s": ["a"], "n": [3], "b": [True]})
    sig = infer_signature(x, np.array([0])).to_dict()
    (tmp_path / "MLmodel").write_text(f"signature:\n  inputs: '{sig['inputs']}'\n")
    assert onnx_export.signature_columns(tmp_path) == [
        ("z", onnx_export.FLOAT),
        ("s", onnx_export.STRING),
        ("n", onnx_export.FLOAT),
        ("b", onnx_export.STRING),
    ]
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert onnx_export.signature_columns(tmp_path) is None


def test_register_retags_a_reused_version_and_drops_a_stale_sha256() -> None:
    from types import SimpleNamespace

    from stages import register

    class Client:
        def __init__(self) -> None:
            self.tags = {register.TAG_ONNX_SHA256: "old", "keep": "1"}

        def set_model_version_tag(self, name, version, key, value) -> None:
            self.tags[key] = value

        def delete_model_version_tag(self, name, version, key) -> None:
            del self.tags[key]

    client = Client()
    version = SimpleNamespace(version="3", tags=dict(client.tags))
    unsupported = onnx_export.Export(onnx_export.UNSUPPORTED, "no converter")
    register._retag(client, "m", version, register.onnx_tags(unsupported))
    assert client.tags == {
        "keep": "1",
        register.TAG_ONNX: onnx_export.UNSUPPORTED,
        register.TAG_ONNX_DETAIL: "no converter",
    }
    verified = onnx_export.Export(onnx_export.VERIFIED, "ok", b"graph")
    tags = register.onnx_tags(verified)
    assert tags[register.TAG_ONNX_SHA256] == hashlib.sha256(b"graph").hexdigest()
    register._retag(client, "m", version, tags)
    assert client.tags[register.TAG_ONNX_SHA256] == tags[register.TAG_ONNX_SHA256]
