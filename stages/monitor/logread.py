"""One prediction-log file in, its rows out: fast when every line is good.

A file is first read whole by pyarrow's JSON reader (columnar, in C++: a
million entries in a few seconds), with the types it infers from the file's
first block given to it for the rest: inferring them on every block costs
pyarrow more than parsing (about 1.6x the time, measured here). Only if that
fails, or any entry is not of the log's shape, is it read again line by line,
which says which lines are bad and why, and keeps the good ones. Both give
the same :class:`Piece`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:  # orjson parses a log line several times faster; json is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is in constraints.txt
    from json import loads as _loads  # type: ignore[assignment]

# How many bad lines are quoted per file; all are counted.
BAD_EXAMPLES = 5
# pyarrow's block: a line longer than this sends the file to the line reader.
BLOCK_BYTES = 1 << 24
# The sample the types are inferred from: the file's first lines.
SAMPLE_BYTES = 1 << 20
# Read as text, as the line reader sees them: pyarrow would parse "time" itself.
TEXT_FIELDS = ("time", "request_id", "model_version")


@dataclass
class Piece:
    """The rows of one file at or after ``since``.

    From the fast reader, ``frame``'s number columns are read-only views of
    arrow's buffers (no copy of a million rows): copy before writing to them.
    """

    frame: pd.DataFrame
    predictions: pd.Series
    request_ids: np.ndarray
    rows: np.ndarray
    versions: np.ndarray
    first: datetime | None = None
    last: datetime | None = None
    lines: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)


def read(path: Path, since: datetime | None) -> Piece:
    """The file's entries at or after ``since`` (all when None)."""
    return _read_arrow(path, since) or _read_lines(path, since)


def _read_arrow(path: Path, since: datetime | None) -> Piece | None:
    """The whole file at once; None unless every entry has the log's shape."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    text = pa.schema([(c, pa.string()) for c in TEXT_FIELDS])
    try:
        schema = _sampled_schema(path, text)
        # With every field the reader needs typed, the rest ("model",
        # "predictor") is skipped, not inferred: about 15% less time here.
        rest = "ignore" if "outputs" in schema.names else "infer"
        table = pj.read_json(
            path,
            read_options=pj.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior=rest
            ),
        )
        if not _well_formed(table):
            return None
        times = pc.cast(table["time"], pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lines = table.num_rows
    if since is not None:
        keep = pc.greater_equal(times, pa.scalar(since, pa.timestamp("us", tz="UTC")))
        table, times = table.filter(keep), times.filter(keep)
    inputs = table["inputs"]
    parents = pc.list_parent_indices(inputs).to_numpy()
    flat = pc.list_flatten(inputs).combine_chunks()
    # One block per column: the numbers stay in arrow's buffers (read-only),
    # not copied into one new 2-D block.
    frame = (
        pa.Table.from_struct_array(flat).to_pandas(split_blocks=True)
        if len(flat)
        else pd.DataFrame()
    )
    starts = np.cumsum(pc.list_value_length(inputs).to_numpy()) if len(parents) else []
    first_row = np.concatenate([[0], starts])[parents] if len(parents) else parents
    bounds = pc.min_max(times).as_py() if len(times) else {"min": None, "max": None}
    return Piece(
        frame=frame,
        predictions=pc.list_flatten(table["outputs"]).to_pandas(),
        request_ids=_per_row(table, "request_id", parents),
        rows=np.arange(len(parents)) - first_row,
        versions=_per_row(table, "model_version", parents),
        first=bounds["min"],
        last=bounds["max"],
        lines=lines,
    )


def _sampled_schema(path: Path, text: Any) -> Any:
    """The types of the file's first lines, input numbers widened to float64
    (a later 1.5 in a column of whole numbers still fits); ``text`` alone when
    the sample does not settle the inputs (a null-typed field), and no
    ``outputs`` when it does not settle those. Outputs keep their type: a
    model answers in one. A later line that does not fit fails the fast read,
    and the line reader takes over."""
    import io

    import pyarrow as pa
    import pyarrow.json as pj

    with path.open("rb") as f:
        head = f.read(SAMPLE_BYTES)
    head = head[: head.rfind(b"\n") + 1]
    if not head:
        return text
    sample = pj.read_json(
        io.BytesIO(head), parse_options=pj.ParseOptions(explicit_schema=text)
    ).schema

    def widen(kind: Any) -> Any:
        if pa.types.is_integer(kind):
            return pa.float64()
        if pa.types.is_null(kind):
            raise ValueError("unsettled")
        if pa.types.is_list(kind):
            return pa.list_(widen(kind.value_type))
        if pa.types.is_struct(kind):
            return pa.struct([pa.field(f.name, widen(f.type)) for f in kind])
        return kind

    try:
        schema = text.append(pa.field("inputs", widen(sample.field("inputs").type)))
    except (KeyError, ValueError):
        return text
    try:
        widen(outputs := sample.field("outputs").type)  # only to see it is settled
    except (KeyError, ValueError):
        return schema
    return schema.append(pa.field("outputs", outputs))


def _well_formed(table: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not {"inputs", "outputs", "time"} <= set(table.column_names):
        return False
    inputs, outputs, times = table["inputs"], table["outputs"], table["time"]
    if not (
        pa.types.is_list(inputs.type)
        and pa.types.is_struct(inputs.type.value_type)
        and pa.types.is_list(outputs.type)
        and pa.types.is_string(times.type)
    ):
        return False
    if inputs.null_count or outputs.null_count or times.null_count:
        return False
    same = pc.equal(pc.list_value_length(inputs), pc.list_value_length(outputs))
    return bool(pc.all(same).as_py()) if table.num_rows else True


def _per_row(table: Any, column: str, parents: np.ndarray) -> np.ndarray:
    """An entry's value repeated for each of its rows, as text ("" when absent).

    Repeated in arrow, then made Python strings once (not via pandas' object
    columns and ``astype(str)``, four passes over a million values).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        return np.full(len(parents), "", dtype=object)
    values = pc.take(pc.fill_null(table[column], ""), pa.array(parents))
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def _entry(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """The parsed line, or None and why it is not a log entry."""
    try:
        entry = _loads(line)
    except ValueError as e:
        return None, f"not JSON ({str(e)[:60]})"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    inputs, outputs = entry.get("inputs"), entry.get("outputs")
    if not isinstance(inputs, list) or not all(isinstance(r, dict) for r in inputs):
        return None, "'inputs' is not a list of objects"
    if not isinstance(outputs, list) or len(outputs) != len(inputs):
        return None, "'outputs' is not a list as long as 'inputs'"
    if not isinstance(entry.get("time"), str):
        return None, "no 'time'"
    return entry, ""


def _when(entry: Mapping[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(entry["time"])
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def _read_lines(path: Path, since: datetime | None) -> Piece:
    """Line by line: bad lines are counted, the first few quoted, and skipped."""
    rows: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {"out": [], "rid": [], "row": [], "ver": []}
    times: list[datetime] = []
    lines, bad, examples = 0, 0, list[str]()
    for number, line in _lines(path):
        lines += 1
        entry, why = _entry(line)
        moment = _when(entry) if entry is not None else None
        if entry is None or moment is None:
            bad += 1
            if len(examples) < BAD_EXAMPLES:
                examples.append(f"{path.name}:{number}: {why or 'bad time'}")
            continue
        if since is not None and moment < since:
            continue
        times.append(moment)
        n = len(entry["inputs"])
        rows.extend(entry["inputs"])
        cols["out"].extend(entry["outputs"])
        cols["rid"].extend([str(entry.get("request_id", ""))] * n)
        cols["row"].extend(range(n))
        cols["ver"].extend([str(entry.get("model_version", ""))] * n)
    return Piece(
        frame=pd.DataFrame.from_records(rows) if rows else pd.DataFrame(),
        predictions=pd.Series(cols["out"]),
        request_ids=np.array(cols["rid"], dtype=object),
        rows=np.array(cols["row"], dtype=int),
        versions=np.array(cols["ver"], dtype=object),
        first=min(times) if times else None,
        last=max(times) if times else None,
        lines=lines,
        bad_lines=bad,
        bad_examples=examples,
    )
