"""What each built-in stage reads and writes.

A built-in stage names its inputs and outputs by *role* ("data", "model", ...).
The plan gives every output a path under ``artifacts/<stage>/`` and resolves
every input to the output of the same role of the nearest upstream stage, so
`needs:` is all a user writes to wire stages together.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ARTIFACTS_DIR = "artifacts"
STAGES_PACKAGE = "stages"
# Every built-in stage imports the package (its allow-list rule, how a stage
# process ends, and the warm server it hands itself to), common, and tracking
# (MLflow's client settings), which common imports: a change to any of them
# re-runs them all.
SHARED_MODULES = ("__init__", "common", "tracking", "warm")


class Kind(Enum):
    """How DVC treats an output."""

    # Every plain output is DVC-cached, small JSON files too: DVC (3.x) keeps
    # no run-cache for a stage with a `cache: false` output that is neither a
    # metric nor a plot, so such a stage could never be restored on another
    # machine (after a merge, on an Argo pod) and would run again.
    OUT = "outs"  # cached by DVC, pushed to the remote
    METRIC = "metrics"  # kept in git, shown by `dvc metrics`
    PLOTS = "plots"  # kept in git, shown by `dvc plots`


@dataclass(frozen=True)
class Output:
    role: str
    filename: str
    kind: Kind


@dataclass(frozen=True)
class Input:
    role: str
    required: bool = True


@dataclass(frozen=True)
class Builtin:
    name: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    # Other modules of the stages package its code imports, directly or
    # through another (besides the shared ones).
    helpers: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"{STAGES_PACKAGE}/{self.name}.py"

    @property
    def modules(self) -> tuple[str, ...]:
        """The stage's own code: a change to any of it re-runs the stage."""
        helpers = (f"{STAGES_PACKAGE}/{h}.py" for h in self.helpers)
        shared = (f"{STAGES_PACKAGE}/{m}.py" for m in SHARED_MODULES)
        return (self.module, *helpers, *shared)


def _o(role: str, filename: str, kind: Kind = Kind.OUT) -> Output:
    return Output(role, filename, kind)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("ingest", (), (_o("data", "data.parquet"),)),
        Builtin(
            "validate",
            (Input("data"), Input("train", False), Input("test", False)),
            (
                _o("validation", "validation.json", Kind.METRIC),
                _o("validation_report", "deepchecks.html"),
            ),
            helpers=("suites",),
        ),
        Builtin(
            "preprocess",
            (Input("data"),),
            (
                _o("train", "train.parquet"),
                _o("test", "test.parquet"),
                _o("preprocessor", "preprocessor.joblib"),
            ),
        ),
        Builtin(
            "tune",
            (Input("train"), Input("preprocessor")),
            (
                _o("best_params", "best_params.json"),
                _o("trials", "trials.csv", Kind.PLOTS),
            ),
        ),
        Builtin(
            "train",
            (Input("train"), Input("preprocessor"), Input("best_params", False)),
            (
                _o("model", "model"),
                _o("train_metrics", "train_metrics.json", Kind.METRIC),
                _o("run", "run.json"),
            ),
            # The canonical skops writer.
            helpers=("modelfile",),
        ),
        Builtin(
            "evaluate",
            (Input("model"), Input("test"), Input("train", False), Input("run")),
            (
                _o("metrics", "metrics.json", Kind.METRIC),
                _o("gates", "gates.json", Kind.METRIC),
                _o("plots", "plots", Kind.PLOTS),
                _o("evaluation_report", "deepchecks.html"),
            ),
            # lookups: the production model's metrics, for max_drop gates;
            # modelfile: the gate every model is loaded through; suites:
            # deepchecks' model evaluation.
            helpers=("lookups", "modelfile", "suites"),
        ),
        Builtin(
            "register",
            # The test split: the ONNX conversion is checked on every row of it.
            (
                Input("model"),
                Input("metrics"),
                Input("gates"),
                Input("run"),
                Input("test"),
            ),
            # model.onnx is always written (empty when the model did not
            # convert): DVC needs every declared output to exist.
            (_o("registered", "registered.json"), _o("onnx", "model.onnx")),
            helpers=("lookups", "modelfile", "onnx_export"),
        ),
    )
}
