"""The current data: the prediction log, a source under ``data:``, or a file.

The log is what ``mlops serve`` writes (:mod:`stages.serving.predlog`): every
``predictions-*.jsonl*`` file in the folder, rotated ones included, one JSON
object a line with one ``inputs`` object and one ``outputs`` value per row. A
line that is not such an object is counted and reported, never fatal: a
server killed mid-write leaves half a line. Files and sources are read with
ingest's readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from stages import common, ingest

LOG_GLOB = "predictions-*.jsonl*"
REQUEST_ID = "request_id"
ROW = "row"
# How many bad lines are quoted in monitor.json; all are counted.
BAD_EXAMPLES = 5
_DURATION = re.compile(r"^([1-9][0-9]*)([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}

try:  # orjson parses a log line several times faster; json is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is in constraints.txt
    from json import loads as _loads  # type: ignore[assignment]


@dataclass
class Batch:
    """The current rows, and what reading them found."""

    source: str
    frame: pd.DataFrame
    predictions: pd.Series | None = None
    keys: pd.DataFrame | None = None  # request_id, row: for joining labels
    versions: pd.Series | None = None  # the model version of each row's answer
    files: list[str] = field(default_factory=list)
    lines: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)
    first_time: str | None = None
    last_time: str | None = None
    since: str | None = None

    def summary(self) -> dict[str, Any]:
        """What monitor.json says about the current data."""
        return {
            "source": self.source,
            "rows": len(self.frame),
            "files": self.files,
            "lines": self.lines,
            "bad_lines": self.bad_lines,
            "bad_line_examples": self.bad_examples,
            "window": {
                "since": self.since,
                "first": self.first_time,
                "last": self.last_time,
            },
        }


def since_time(when: str | None, now: datetime) -> datetime | None:
    """``24h``/``7d``/``2w`` before ``now``, or an ISO date or datetime (UTC
    unless it has an offset); None for no lower bound."""
    if not when:
        return None
    match = _DURATION.match(when)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(when)
    except ValueError as e:
        raise common.StageError(
            f"--since {when!r} is neither a duration (24h, 7d, 2w) nor an ISO "
            "date or datetime"
        ) from e
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def log_files(folder: Path) -> list[Path]:
    """Every file of the log, current and rotated, in a stable order."""
    return sorted(p for p in folder.glob(LOG_GLOB) if p.is_file())


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


def _lines(files: Iterable[Path]) -> Iterator[tuple[str, int, bytes]]:
    for path in files:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield path.name, number, line


def _when(entry: Mapping[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(entry["time"])
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_log(folder: Path, since: datetime | None = None) -> Batch:
    """Read every log file in ``folder``; entries before ``since`` are skipped."""
    files = log_files(folder) if folder.is_dir() else []
    batch = Batch(
        source=f"prediction log {folder}",
        frame=pd.DataFrame(),
        files=[p.name for p in files],
        since=since.isoformat() if since else None,
    )
    rows: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {"out": [], "rid": [], "row": [], "ver": []}
    times: list[datetime] = []
    for name, number, line in _lines(files):
        batch.lines += 1
        entry, why = _entry(line)
        moment = _when(entry) if entry is not None else None
        if entry is None or moment is None:
            batch.bad_lines += 1
            if len(batch.bad_examples) < BAD_EXAMPLES:
                batch.bad_examples.append(f"{name}:{number}: {why or 'bad time'}")
            continue
        if since is not None and moment < since:
            continue
        times.append(moment)
        n = len(entry["inputs"])
        rows.extend(entry["inputs"])
        cols["out"].extend(entry["outputs"])
        cols["rid"].extend([str(entry.get(REQUEST_ID, ""))] * n)
        cols["row"].extend(range(n))
        cols["ver"].extend([str(entry.get("model_version", ""))] * n)
    batch.frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    batch.predictions = pd.Series(cols["out"], name="prediction")
    batch.keys = pd.DataFrame({REQUEST_ID: cols["rid"], ROW: cols["row"]})
    batch.versions = pd.Series(cols["ver"], dtype=str)
    if times:
        batch.first_time = min(times).isoformat()
        batch.last_time = max(times).isoformat()
    return batch


def read_file(path: Path) -> Batch:
    """``--current FILE``: CSV, Parquet or JSON, by its suffix."""
    if not path.is_file():
        raise common.StageError(f"--current {path}: no such file")
    fmt = ingest.detect_format(str(path))
    return _frame_batch(f"file {path}", _read(lambda: ingest.read_file(str(path), fmt)))


def read_source(name: str, source: Mapping[str, Any]) -> Batch:
    """``monitoring.current``: a source under ``data:``, read as ingest reads it."""
    return _frame_batch(
        f"data source {name!r}", _read(lambda: ingest.load_source(source))
    )


def _read(reader: Any) -> pd.DataFrame:
    try:
        return reader()  # type: ignore[no-any-return]
    except common.StageError:
        raise
    except Exception as e:  # readers raise many types; report them as one line
        raise common.StageError(f"cannot read the current data: {e}") from e


def _frame_batch(source: str, frame: pd.DataFrame) -> Batch:
    keys = None
    if REQUEST_ID in frame.columns:
        row = frame[ROW] if ROW in frame.columns else 0
        keys = pd.DataFrame({REQUEST_ID: frame[REQUEST_ID].astype(str), ROW: row})
    return Batch(source=source, frame=frame, keys=keys, lines=len(frame))
