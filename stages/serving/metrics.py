"""Prometheus metrics of the server, every one labelled with the model version.

- ``mlops_requests_total{status, model_version}``: ``/invocations`` requests;
- ``mlops_request_errors_total{status, error_code, model_version}``: refused
  or failed ones;
- ``mlops_request_duration_seconds{model_version}``: a latency histogram;
- ``mlops_rows_total{model_version}``: rows predicted;
- ``mlops_predictions_total{class, model_version}``: rows by predicted class
  (classifiers);
- ``mlops_prediction_value{model_version}``: a histogram of predicted values
  (regressors);
- ``mlops_model_info{model, model_version, predictor, run_id}``: always 1.

With more than one worker, prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set by :mod:`stages.serving.server` before the
workers start) and ``/metrics`` adds up every worker's files, leaving out the
ones a worker has created but not yet sized (:func:`sized_files`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
# Regression values have no known scale: symmetric powers of ten.
VALUE_BUCKETS = tuple(
    sorted({s * 10.0**e for s in (-1, 1) for e in range(-2, 7)} | {0.0})
)
MAX_CLASS_LABELS = 100


class Metrics:
    """The server's metrics in their own registry (no module-level state)."""

    def __init__(self, model: str, version: str, classifier: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.version = version
        self.classifier = classifier
        r = self.registry
        self.requests = Counter(
            "mlops_requests", "Requests to /invocations by HTTP status.",
            ["status", "model_version"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "mlops_request_errors", "Rejected or failed /invocations requests.",
            ["status", "error_code", "model_version"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "mlops_request_duration_seconds",
            "Time from the request's arrival to its answer, /invocations only.",
            ["model_version"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rows = Counter(
            "mlops_rows", "Rows predicted.", ["model_version"], registry=r
        )
        self.by_class = Counter(
            "mlops_predictions", "Predicted rows by class.",
            ["class", "model_version"], registry=r,
        )  # fmt: skip
        self.values = Histogram(
            "mlops_prediction_value", "Predicted values (regression).",
            ["model_version"], buckets=VALUE_BUCKETS, registry=r,
        )  # fmt: skip
        self.info = Gauge(
            "mlops_model_info", "The model this server serves (always 1).",
            ["model", "model_version", "predictor", "run_id"], registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self._latency = self.latency.labels(version)
        self._rows = self.rows.labels(version)
        self._values = self.values.labels(version)
        self._classes: dict[str, Any] = {}
        self._model = model

    def loaded(self, predictor: str, run_id: str) -> None:
        """The model is in memory: say which one and how it predicts."""
        self.info.labels(self._model, self.version, predictor, run_id).set(1)

    def answered(self, status: int, seconds: float, error_code: str | None) -> None:
        """One /invocations request, answered with ``status``."""
        self.requests.labels(str(status), self.version).inc()
        if error_code is not None:
            self.errors.labels(str(status), error_code, self.version).inc()
        self._latency.observe(seconds)

    def predicted(self, outputs: Sequence[Any]) -> None:
        """Count the predictions: by class, or by value for regression."""
        self._rows.inc(len(outputs))
        if not self.classifier:
            for value in outputs:
                self._values.observe(float(value))
            return
        counts: dict[str, int] = {}
        for label in outputs:
            key = str(label)
            counts[key] = counts.get(key, 0) + 1
        for label, n in counts.items():
            child = self._classes.get(label)
            if child is None:
                # A model with endless classes must not grow endless series.
                full = len(self._classes) >= MAX_CLASS_LABELS
                child = self.by_class.labels("other" if full else label, self.version)
                if not full:
                    self._classes[label] = child
            child.inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The text ``/metrics`` answers, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        path = os.environ.get(MULTIPROC_ENV)
        if path:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
            registry.register(_WorkersCollector(path))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def sized_files(path: str) -> list[str]:
    """The workers' metric files in ``path`` that have been sized.

    prometheus-client creates a worker's file empty and sizes it just after
    (``MmapedDict.__init__``); its ``MultiProcessCollector`` reads every file,
    and an empty one makes it raise ``struct.error``, which failed the whole of
    ``/metrics`` with a 500 (client_python issue 1199, open). An empty file
    holds no value yet, and one that a worker killed in between left empty
    never will: leaving it out loses nothing.
    """
    found = []
    for name in sorted(glob.glob(os.path.join(path, "*.db"))):
        try:
            if os.stat(name).st_size > 0:
                found.append(name)
        except FileNotFoundError:  # removed since the listing
            continue
    return found


class _WorkersCollector:
    """Every worker's metrics, added up as prometheus-client's multiprocess
    mode does, from :func:`sized_files` only."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        return MultiProcessCollector.merge(sized_files(self.path), accumulate=True)
