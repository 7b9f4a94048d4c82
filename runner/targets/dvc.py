"""Plan -> dvc.yaml and params.yaml, the local engine's pipeline."""

from __future__ import annotations

from typing import Any

from runner.plan import Plan, PlannedStage
from stages import DVC_FILE, PARAMS_FILE

NO_CACHE = {"cache": False}


def _stage(stage: PlannedStage) -> dict[str, Any]:
    # DVC's own key order: desc, cmd, wdir, deps, params, outs, metrics, plots.
    entry: dict[str, Any] = {
        "desc": stage.desc,
        "cmd": stage.cmd,
        "deps": list(stage.deps),
        "params": list(stage.params),
        "outs": list(stage.outs),
        "metrics": [{p: NO_CACHE} for p in stage.metrics],
        "plots": [{p: NO_CACHE} for p in stage.plots],
        "always_changed": stage.always_changed,
    }
    return {k: v for k, v in entry.items() if v}


def compile_plan(plan: Plan) -> dict[str, dict[str, Any]]:
    """The files of the DVC target, as data."""
    return {
        DVC_FILE: {"stages": {s.name: _stage(s) for s in plan.stages}},
        PARAMS_FILE: plan.params,
    }
