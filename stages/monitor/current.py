"""The current data: the prediction log, a source under ``data:``, or a file.

The log is what ``mlops serve`` writes (:mod:`stages.serving.predlog`): every
``predictions-*.jsonl*`` file in the folder, rotated ones included, one JSON
object a line with one ``inputs`` object and one ``outputs`` value per row. A
line that is not such an object is counted and reported, never fatal: a
server killed mid-write leaves half a line (:mod:`stages.monitor.logread`).
Files and sources are read with ingest's readers.

The server writes its log to a local folder; where a team ships those files
to an object store (a sidecar, a cron job), the log's location may be any URL
fsspec reads (``s3://``, ``gs://``, ``az://``, with the filesystem's package
and credentials installed, as for the DVC remote): its files are copied to a
temporary folder first and read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages import common, ingest

LOG_GLOB = "predictions-*.jsonl*"
REQUEST_ID = "request_id"
ROW = "row"
# How many bad lines are quoted in monitor.json; all are counted.
BAD_EXAMPLES = 5
_DURATION = re.compile(r"^([1-9][0-9]*)([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


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


def read_log(location: str | Path, since: datetime | None = None) -> Batch:
    """Read every log file at ``location`` (a folder or an fsspec URL)."""
    text = str(location)
    if "://" not in text:
        return _read_log(Path(location), since)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlops-log-") as tmp:
        batch = _read_log(fetch_log(text, Path(tmp)), since)
    batch.source = f"prediction log {text}"
    return batch


def fetch_log(url: str, dest: Path) -> Path:
    """Copy the log's files at ``url`` into ``dest``: none there is no error.

    A store that cannot be listed or read (credentials, network) raises: that
    is a failure of the check, never an empty log.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for remote in sorted(fs.glob(f"{str(root).rstrip('/')}/{LOG_GLOB}")):
        fs.get_file(remote, str(dest / Path(str(remote)).name))
    return dest


def _read_log(folder: Path, since: datetime | None) -> Batch:
    """Read every log file in ``folder``; entries before ``since`` are skipped."""
    from stages.monitor import logread

    files = log_files(folder) if folder.is_dir() else []
    pieces = [logread.read(path, since) for path in files]
    batch = Batch(
        source=f"prediction log {folder}",
        frame=pd.DataFrame(),
        files=[p.name for p in files],
        since=since.isoformat() if since else None,
        lines=sum(p.lines for p in pieces),
        bad_lines=sum(p.bad_lines for p in pieces),
        bad_examples=[e for p in pieces for e in p.bad_examples][:BAD_EXAMPLES],
    )
    frames = [p.frame for p in pieces if len(p.frame)]
    if frames:
        batch.frame = pd.concat(frames, ignore_index=True)
    kept = [p for p in pieces if len(p.frame)]
    batch.predictions = (
        pd.concat([p.predictions for p in kept], ignore_index=True)
        if (kept)
        else pd.Series(dtype=object)
    )
    join = np.concatenate
    batch.keys = pd.DataFrame(
        {
            REQUEST_ID: join([p.request_ids for p in kept]) if kept else [],
            ROW: join([p.rows for p in kept]) if kept else [],
        }
    )
    batch.versions = pd.Series(
        join([p.versions for p in kept]) if kept else [], dtype=str
    )
    firsts = [p.first for p in pieces if p.first is not None]
    lasts = [p.last for p in pieces if p.last is not None]
    batch.first_time = min(firsts).isoformat() if firsts else None
    batch.last_time = max(lasts).isoformat() if lasts else None
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
