"""The prediction log: what was asked and answered, one JSON object a line.

Each server process appends to its own file,
``<deploy.prediction_log.path>/predictions-<host>-<pid>.jsonl``, rotated by
size (``max_bytes``; ``backups`` older files kept as ``.jsonl.1``, ``.2``...,
by :class:`logging.handlers.RotatingFileHandler`). One line per logged
request::

    {"request_id": "...", "time": "2026-12-01T18:03:13.123456+00:00",
     "model": "cancer-classifier", "model_version": "3", "predictor": "onnx",
     "inputs": [{"mean radius": 14.2, ...}], "outputs": [1]}

``inputs`` holds one ``{column: value}`` object per row of the request (a
missing number is ``null``) and ``outputs`` the prediction for each row, in
the same order. ``sample`` (0 to 1) is the share of requests logged, drawn
from a seeded random generator; 0 writes no file at all.

The request path only keeps the parsed request; every 50 ms (or 256
requests) the batch goes on a queue, and a :class:`QueueListener` thread builds
the JSON lines and writes them, so no file I/O happens while a request waits.
A file is rotated between lines, before the line that would take it over
``max_bytes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import random
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path
from typing import Any

import numpy as np

from stages.serving.inputs import Column, rows_of

FLUSH_SECONDS = 0.05
BATCH = 256


def log_file(folder: str | Path) -> Path:
    """This process's file in the log folder."""
    return Path(folder) / f"predictions-{socket.gethostname()}-{os.getpid()}.jsonl"


class _RotatingLines(RotatingFileHandler):
    """Writes a batch of requests as JSON lines, rotating between lines.

    Runs in the listener's thread: the JSON is built there, the size is read
    once a batch (not once a line, as ``RotatingFileHandler.emit`` does), and
    the file is flushed once a batch.
    """

    def __init__(self, path: Path, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(path, encoding="utf-8", delay=True, **kwargs)
        self.columns = columns

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                self.stream = self._open()
            size = self.stream.seek(0, os.SEEK_END)
            batch: list[dict[str, Any]] = record.msg  # type: ignore[assignment]
            for entry in batch:
                line = self.line(entry)
                n = len(line.encode("utf-8"))
                if self.maxBytes > 0 and size and size + n > self.maxBytes:
                    self.doRollover()
                    if self.stream is None:
                        self.stream = self._open()
                    size = 0
                self.stream.write(line)
                size += n
            self.flush()
        except Exception:
            self.handleError(record)

    def line(self, entry: dict[str, Any]) -> str:
        """One request's JSON line (inputs as row objects, NaN as null)."""
        entry = {**entry, "inputs": rows_of(self.columns, entry["inputs"])}
        return json.dumps(entry, default=str) + "\n"


class _Enqueue(QueueHandler):
    """Queue the batch as it is: the writer thread builds the lines."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class PredictionLog:
    """Sampled, rotated JSON lines of the requests this process answered.

    Requests are handed to the writer thread in batches (every
    :data:`FLUSH_SECONDS`, or :data:`BATCH` requests, whichever comes first):
    one hand-over per request would cost more CPU in thread switches than the
    prediction itself.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        sample: float,
        max_bytes: int,
        backups: int,
        seed: int,
        columns: Sequence[Column],
        model: str,
        version: str,
        predictor: str,
    ) -> None:
        self.sample = float(sample)
        self.rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
        self.fixed = {"model": model, "model_version": version, "predictor": predictor}
        self.path: Path | None = None
        self.listener: QueueListener | None = None
        self.handler: QueueHandler | None = None
        self.pending: list[dict[str, Any]] = []
        if self.sample <= 0:
            return
        self.path = log_file(folder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _RotatingLines(
            self.path, columns, maxBytes=max_bytes, backupCount=backups
        )
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.handler = _Enqueue(records)
        self.listener = QueueListener(records, writer)
        self.listener.start()

    def wants(self) -> bool:
        """Whether this request is logged (one draw of the seeded sampler)."""
        if self.handler is None:
            return False
        return self.sample >= 1 or self.rng.random() < self.sample

    def write(
        self, request_id: str, when: datetime, inputs: Sequence[np.ndarray],
        outputs: Sequence[Any],
    ) -> None:  # fmt: skip
        """Keep one request for the next batch (call from the event loop)."""
        if self.handler is None:
            return
        if not self.pending:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        self.pending.append(
            {
                "request_id": request_id,
                "time": when.astimezone(UTC).isoformat(),
                **self.fixed,
                "inputs": inputs,
                "outputs": list(outputs),
            }
        )
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the pending requests to the writer thread."""
        if self.handler is not None and self.pending:
            batch, self.pending = self.pending, []
            self.handler.handle(logging.makeLogRecord({"msg": batch}))

    def close(self) -> None:
        """Write what is pending and queued, then close the file."""
        self.flush()
        if self.listener is not None:
            self.listener.stop()
            for handler in self.listener.handlers:
                handler.close()
            self.listener = None
            self.handler = None
