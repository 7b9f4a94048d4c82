"""Load the checked model bytes and predict: onnxruntime first, scikit-learn else.

Each worker reads the file that :mod:`stages.serving.fetch` checked, hashes
the bytes it read and refuses them unless they hash to what the check
recorded, then builds the predictor from those same bytes: the bytes served
are the bytes checked, whatever happens to the file afterwards.

The ONNX contract (written at register time): one graph input per signature
column, in signature order, each ``[None, 1]``; the first output is the label
(classifiers) or ``[None, 1]`` values (regressors). Inputs are fed by position
because skl2onnx renames them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stages.serving.inputs import Column

ONNX = "onnx"
SKLEARN = "sklearn"
# onnxruntime's input types and the numpy dtype fed to each.
ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class Predictor(Protocol):
    """What the app calls: columns in signature order in, one answer per row out."""

    kind: str
    # True when predict() holds the CPU long enough to belong off the event loop.
    blocking: bool

    def predict(self, values: Sequence[np.ndarray]) -> list[Any]: ...


def checked_bytes(path: str | Path, sha256: str) -> bytes:
    """The file's bytes, only if they hash to what the check recorded."""
    data = Path(path).read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise RuntimeError(
            f"{path} changed since it was checked (sha256 {found}, checked "
            f"{sha256}): run `mlops serve` again to fetch and check it"
        )
    return data


def _labels(classes: Sequence[Any] | None) -> dict[str, Any] | None:
    """ONNX labels back to the model's own class values (ints stay ints)."""
    return None if classes is None else {str(c): c for c in classes}


class OnnxPredictor:
    """An onnxruntime session on one thread: workers give the concurrency."""

    kind = ONNX
    blocking = False

    def __init__(
        self, data: bytes, classes: Sequence[Any] | None, missing_string: str
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [(i.name, ONNX_DTYPES[i.type]) for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name
        self.labels = _labels(classes)
        self.missing = missing_string

    def _feed(self, dtype: Any, column: np.ndarray) -> np.ndarray:
        if dtype is not object:
            return column.astype(dtype, copy=False).reshape(-1, 1)
        # As stages.onnx_export.feed does: str() of each value, missing as agreed.
        text = [self.missing if v is None else str(v) for v in column.tolist()]
        return np.array(text, dtype=object).reshape(-1, 1)

    def predict(self, values: Sequence[np.ndarray]) -> list[Any]:
        feeds = {
            name: self._feed(dtype, column)
            for (name, dtype), column in zip(self.inputs, values, strict=True)
        }
        out = self.session.run([self.output], feeds)[0]
        if self.labels is None:
            return out.reshape(len(out), -1)[:, 0].astype(np.float64).tolist()
        labels = self.labels
        # A label the classes do not name (a converter's own dtype) passes as is.
        return [labels.get(str(v), v) for v in out.tolist()]


class SklearnPredictor:
    """The scikit-learn pipeline, fed a DataFrame with the signature's names."""

    kind = SKLEARN
    blocking = True

    def __init__(self, model: Any, columns: Sequence[Column]) -> None:
        self.model = model
        self.names = [c.name for c in columns]

    def predict(self, values: Sequence[np.ndarray]) -> list[Any]:
        import pandas as pd

        frame = pd.DataFrame(dict(zip(self.names, values, strict=True)))
        return list(np.asarray(self.model.predict(frame)).tolist())


def load_sklearn(served: Mapping[str, Any]) -> Any:
    """The skops file's checked bytes, loaded through the same type gate."""
    from stages import modelfile

    data = checked_bytes(served["skops_file"], served["skops_sha256"])
    return modelfile.load_bytes(data, served["allow"], served["skops_file"])


def load(served: Mapping[str, Any], columns: Sequence[Column]) -> Predictor:
    """The predictor :mod:`stages.serving.fetch` chose, built from checked bytes."""
    onnx = served.get("onnx")
    if onnx:
        data = checked_bytes(onnx["path"], onnx["sha256"])
        return OnnxPredictor(data, served.get("classes"), onnx["missing_string"])
    return SklearnPredictor(load_sklearn(served), columns)
