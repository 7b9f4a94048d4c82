"""Requests to columns: MLflow's scoring formats, checked against the signature.

The model's signature (the ``signature.inputs`` JSON string of its MLmodel
file) names each column and its type. A request body is parsed straight into
one numpy array per signature column, in signature order, with no DataFrame:
``dataframe_split``, ``dataframe_records``, ``instances`` (a list of records),
``inputs`` (columns, or a list of records) and ``text/csv`` with a header row,
the formats of ``mlflow models serve``. Anything that does not fit, a missing
or repeated column, a value of the wrong type, broken JSON, bytes that are not
UTF-8, raises :class:`BadRequest` with a message naming the column and the
problem, which the app answers with HTTP 400. A column the model does not
take (an identifier ``preprocess.with.drop`` names, say) is ignored, as
MLflow's scoring server ignores it; a missing column's error names them, since
one of them may be the missing one misspelt.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
# MLflow column types and the kind of value each takes.
KINDS = {
    "double": "float",
    "float": "float",
    "long": "int",
    "integer": "int",
    "boolean": "bool",
    "string": "str",
    "datetime": "str",
}
DTYPES = {"float": np.float64, "int": np.int64, "bool": np.bool_, "str": object}
_TYPE_NAMES = {
    bool: "a boolean",
    str: "a string",
    dict: "an object",
    list: "a list",
    int: "an integer",
    float: "a number",
}


# Column names an error lists before "...".
NAMES_SHOWN = 8


class BadRequest(ValueError):
    """The request does not fit the model: answered 400 with this message."""


@dataclass(frozen=True)
class Column:
    """One input column of the signature."""

    name: str
    type: str

    @property
    def kind(self) -> str:
        return KINDS[self.type]


def signature_columns(signature_inputs: str) -> tuple[Column, ...]:
    """The columns of an MLmodel's ``signature.inputs`` (a JSON string)."""
    specs = json.loads(signature_inputs)
    columns = []
    for spec in specs:
        if "name" not in spec or spec.get("type") not in KINDS:
            raise ValueError(
                f"cannot serve signature input {spec}: it must be a named column "
                f"of type {', '.join(sorted(KINDS))}"
            )
        columns.append(Column(str(spec["name"]), str(spec["type"])))
    return tuple(columns)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."  # noqa: PLR2004
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {text}"


def _typed(column: Column, values: Sequence[Any]) -> np.ndarray:
    """One column's JSON values as an array; a value of the wrong type is a 400."""
    try:
        return _as_array(column, values)
    except OverflowError as e:
        raise BadRequest(
            f"column {column.name!r} ({column.type}): a number is out of range ({e})"
        ) from e


def _as_array(column: Column, values: Sequence[Any]) -> np.ndarray:
    kind = column.kind
    found = set(map(type, values))
    if kind == "float" and found <= {float, int, type(None)}:
        return np.array(values, dtype=np.float64)
    if kind == "int" and found <= {int}:
        return np.array(values, dtype=np.int64)
    if kind == "bool" and found <= {bool}:
        return np.array(values, dtype=np.bool_)
    if kind == "str" and found <= {str, type(None)}:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    want = {"float": "a number", "int": "an integer", "bool": "true or false"}
    for row, value in enumerate(values):
        ok = (
            (kind == "float" and type(value) in (float, int, type(None)))
            or (kind == "int" and type(value) is int)
            or (kind == "bool" and type(value) is bool)
            or (kind == "str" and type(value) in (str, type(None)))
        )
        if not ok:
            raise BadRequest(
                f"column {column.name!r} ({column.type}), row {row}: expected "
                f"{want.get(kind, 'a string')}, got {_describe(value)}"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _some(names: Sequence[str]) -> str:
    """The first :data:`NAMES_SHOWN` names, quoted."""
    more = ", ..." if len(names) > NAMES_SHOWN else ""
    return ", ".join(map(repr, names[:NAMES_SHOWN])) + more


def _check_names(given: Iterable[str], columns: Sequence[Column], where: str) -> None:
    names = [c.name for c in columns]
    given = list(given)
    wanted = set(names)
    missing = [n for n in names if n not in given]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
        if unknown := [n for n in given if n not in wanted]:
            problems.append(f"the model does not take {_some(unknown)}")
    dupes = sorted({n for n in given if n in wanted and given.count(n) > 1})
    if dupes:
        problems.append(f"repeated column(s) {', '.join(map(repr, dupes))}")
    if problems:
        raise BadRequest(
            f"{where}: {'; '.join(problems)} (the model takes {len(names)} "
            f"columns: {_some(names)})"
        )


def _rows_or_400(n: int) -> int:
    if n == 0:
        raise BadRequest("the request holds no rows")
    return n


def from_split(split: Any, columns: Sequence[Column]) -> list[np.ndarray]:
    """``{"columns": [...], "data": [[...], ...]}``; no columns: signature order."""
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise BadRequest(
            "dataframe_split must be an object with a 'data' list of rows and "
            "optionally 'columns' and 'index'"
        )
    extra = set(split) - {"columns", "data", "index"}
    if extra:
        raise BadRequest(f"dataframe_split has unknown field(s) {sorted(extra)}")
    names = split.get("columns", [c.name for c in columns])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("dataframe_split 'columns' must be a list of column names")
    _check_names(names, columns, "dataframe_split")
    rows = split["data"]
    _rows_or_400(len(rows))
    width = len(names)
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != width:
            raise BadRequest(
                f"dataframe_split row {i} must be a list of {width} values "
                f"(one per column), got {_describe(row)}"
            )
    if all(c.kind == "float" for c in columns):
        # The common case, all numbers: one array for the whole table.
        found = {type(v) for row in rows for v in row}
        if found <= {float, int, type(None)}:
            try:
                table = np.array(rows, dtype=np.float64)
            except OverflowError:
                table = None
            if table is not None:
                at = {name: j for j, name in enumerate(names)}
                return [table[:, at[c.name]] for c in columns]
    by_name = dict(zip(names, zip(*rows, strict=True), strict=True))
    return [_typed(c, by_name[c.name]) for c in columns]


def from_records(
    records: Any, columns: Sequence[Column], where: str
) -> list[np.ndarray]:
    """``[{"column": value, ...}, ...]``: every record names every column."""
    if not isinstance(records, list):
        raise BadRequest(f"{where} must be a list of records ({{column: value}})")
    _rows_or_400(len(records))
    names = {c.name for c in columns}
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise BadRequest(f"{where} record {i} must be an object, got "
                             f"{_describe(record)}")  # fmt: skip
        if record.keys() != names:
            _check_names(record, columns, f"{where} record {i}")
    return [_typed(c, [r[c.name] for r in records]) for c in columns]


def from_columns(data: Any, columns: Sequence[Column]) -> list[np.ndarray]:
    """``{"column": [values...], ...}`` (``inputs``), or a list of records."""
    if isinstance(data, list):
        return from_records(data, columns, "inputs")
    if not isinstance(data, dict):
        raise BadRequest("inputs must be an object of columns or a list of records")
    _check_names(data, columns, "inputs")
    values = {
        c.name: data[c.name] if isinstance(data[c.name], list) else [data[c.name]]
        for c in columns
    }
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise BadRequest(f"inputs columns differ in length: {sorted(lengths)}")
    _rows_or_400(lengths.pop())
    return [_typed(c, values[c.name]) for c in columns]


def from_json(body: bytes, columns: Sequence[Column]) -> list[np.ndarray]:
    """An ``application/json`` body in one of MLflow's four formats."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8: byte {e.start} ({e.reason})") from e
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from e
    keys = list(doc) if isinstance(doc, dict) else []
    found = [k for k in keys if k in FORMATS]
    if len(found) != 1 or len(keys) != 1:
        got = keys if isinstance(doc, dict) else _describe(doc)
        raise BadRequest(
            f"the body must be a JSON object with exactly one of the keys "
            f"{', '.join(FORMATS)}; got {got}"
        )
    data = doc[found[0]]
    if found[0] == "dataframe_split":
        return from_split(data, columns)
    if found[0] == "inputs":
        return from_columns(data, columns)
    return from_records(data, columns, found[0])


def _csv_value(column: Column, text: str, row: int) -> Any:
    kind = column.kind
    try:
        if kind == "float":
            return math.nan if text == "" else float(text)
        if kind == "int":
            return int(text)
        if kind == "bool":
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
    except (ValueError, KeyError) as e:
        want = {"float": "a number", "int": "an integer", "bool": "true or false"}
        raise BadRequest(
            f"column {column.name!r} ({column.type}), row {row}: expected "
            f"{want[kind]}, got {text!r}"
        ) from e
    return text or None


def from_csv(body: bytes, columns: Sequence[Column]) -> list[np.ndarray]:
    """A ``text/csv`` body: a header row naming the columns, then the rows."""
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")  # a spreadsheet's BOM
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8: byte {e.start} ({e.reason})") from e
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise BadRequest(f"the body is not valid CSV: {e}") from e
    if not rows:
        raise BadRequest("the CSV body is empty: it needs a header row and rows")
    header, rows = rows[0], [r for r in rows[1:] if r]
    _check_names(header, columns, "CSV header")
    _rows_or_400(len(rows))
    at = {name: i for i, name in enumerate(header)}
    out = []
    for c in columns:
        j = at[c.name]
        values = []
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise BadRequest(
                    f"CSV row {i} has {len(row)} fields, the header {len(header)}"
                )
            values.append(_csv_value(c, row[j], i))
        out.append(np.array(values, dtype=DTYPES[c.kind]))
    return out


def media_type(header: str) -> str:
    """The content type without parameters; a charset other than UTF-8 is a 400."""
    kind, _, params = header.partition(";")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value.strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise BadRequest(f"only UTF-8 bodies are accepted, not charset={value}")
    return kind.strip().lower()


# The largest magnitude a served number may have: the ONNX graph computes in
# float32, where anything larger is infinity, and scikit-learn's trees refuse
# it; one bound for both predictors, so they answer the same request alike.
LARGEST = float(np.finfo(np.float32).max)


def _finite(arrays: list[np.ndarray], columns: Sequence[Column]) -> list[np.ndarray]:
    """No infinity in a number column (`1e999` in JSON, `inf` in CSV), and no
    number past :data:`LARGEST`.

    scikit-learn refuses infinity, but onnxruntime predicts from it, and the
    prediction log, which is JSON lines, could not hold it. NaN stays: it is a
    missing value, like null or an empty CSV field, which the imputer fills.
    """
    for column, values in zip(columns, arrays, strict=True):
        if values.dtype != np.float64:
            continue
        with np.errstate(invalid="ignore"):
            wrong = np.abs(values) > LARGEST  # NaN compares False
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            value = values[row]
            got = (
                f"got {value}"
                if np.isinf(value)
                else f"got {value:.6g}, beyond what the model computes in "
                f"(float32, at most {LARGEST:.6g} either side of 0)"
            )
            raise BadRequest(
                f"column {column.name!r} ({column.type}), row {row}: expected "
                f"a finite number, {got}"
            )
    return arrays


def parse(
    content_type: str, body: bytes, columns: Sequence[Column]
) -> list[np.ndarray]:
    """The request's columns in signature order, or :class:`BadRequest`."""
    kind = media_type(content_type)
    if kind == JSON_TYPE:
        return _finite(from_json(body, columns), columns)
    if kind == CSV_TYPE:
        return _finite(from_csv(body, columns), columns)
    raise BadRequest(
        f"Content-Type must be {JSON_TYPE} or {CSV_TYPE}, not {content_type!r}"
        if content_type
        else f"the request has no Content-Type: send {JSON_TYPE} or {CSV_TYPE}"
    )


def rows_of(
    columns: Sequence[Column], values: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """The request's rows as ``{column: value}`` (NaN as null), for the log."""
    lists = []
    for array in values:
        items = array.tolist()
        if array.dtype.kind == "f":
            items = [None if math.isnan(v) else v for v in items]  # NaN is not JSON
        lists.append(items)
    names = [c.name for c in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]


def describe_columns(columns: Sequence[Column]) -> list[dict[str, str]]:
    """The signature as ``/version`` shows it."""
    return [{"name": c.name, "type": c.type} for c in columns]
