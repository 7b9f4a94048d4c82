"""``python -m stages.retrain``: the labelled current rows, for retraining.

``mlops retrain`` runs this after ``mlops monitor`` found drift. It reads the
current data exactly as the monitor did (the same ``--settings`` JSON:
``monitoring.current``, else the prediction log in its window), gives each row
its true outcome (a ``--current`` file or source that holds the target column
is labelled already; logged rows are joined with ``monitoring.labels`` on the
request id and row), and writes the labelled rows as CSV, in the columns the
model was given plus the target. Rows without a label yet are left out: a
model cannot learn from an outcome nobody knows.

Exit codes: 0 written, 1 nothing to write (no labels, or none arrived), with
the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from stages import common, run_then_leave
from stages.monitor import cli as monitor_cli
from stages.monitor import current as cur_mod

KIND = "retrain"


def labelled(
    batch: cur_mod.Batch, target: str, labels: pd.DataFrame | None
) -> pd.DataFrame:
    """The batch's rows with the target column; unlabelled rows dropped."""
    frame = batch.frame
    if target in frame.columns:
        return frame.dropna(subset=[target]).reset_index(drop=True)
    if labels is None:
        raise common.StageError(
            f"the current data has no {target!r} column and monitoring.labels "
            "names no source of true outcomes: there is nothing to retrain on"
        )
    if batch.keys is None:
        raise common.StageError(
            f"the current data has neither a {target!r} nor a "
            f"{cur_mod.REQUEST_ID!r} column to join the labels on"
        )
    for column in (cur_mod.REQUEST_ID, target):
        if column not in labels.columns:
            raise common.StageError(f"the labels source has no {column!r} column")
    truth = pd.DataFrame(
        {
            cur_mod.REQUEST_ID: labels[cur_mod.REQUEST_ID].astype(str),
            cur_mod.ROW: (
                labels[cur_mod.ROW].astype(int) if cur_mod.ROW in labels.columns else 0
            ),
            target: labels[target],
        }
    ).drop_duplicates([cur_mod.REQUEST_ID, cur_mod.ROW], keep="last")
    keys = batch.keys.reset_index(drop=True)
    rows = frame.reset_index(drop=True).assign(
        **{
            cur_mod.REQUEST_ID: keys[cur_mod.REQUEST_ID].astype(str),
            cur_mod.ROW: keys[cur_mod.ROW].astype(int),
        }
    )
    joined = rows.merge(truth, on=[cur_mod.REQUEST_ID, cur_mod.ROW], how="inner")
    joined = joined.drop(columns=[cur_mod.REQUEST_ID, cur_mod.ROW])
    return joined.dropna(subset=[target]).reset_index(drop=True)


def _labels(settings: dict[str, Any]) -> pd.DataFrame | None:
    if not settings.get("labels"):
        return None
    found = cur_mod.read_source(
        settings["labels"]["name"], settings["labels"]["source"]
    )
    return found.frame


def main(argv: list[str] | None = None) -> int:
    """Write the labelled current rows to ``--output`` (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m stages.retrain")
    ap.add_argument("--settings", required=True, help="monitoring settings (JSON)")
    ap.add_argument("--output", required=True, help="the CSV file to write")
    ap.add_argument("--since", help="only log entries after this (7d, or ISO time)")
    args = ap.parse_args(argv)
    try:
        settings = json.loads(args.settings)
        params = common.load_params()
        target = common.project(params)["target"]
        how = SimpleNamespace(current=None, since=args.since)
        batch = monitor_cli.read_current(how, settings)  # type: ignore[arg-type]
        rows = labelled(batch, target, _labels(settings))
        if rows.empty:
            raise common.StageError(
                f"none of the {len(batch.frame)} current rows has a label yet: "
                "there is nothing to retrain on"
            )
    except common.StageError as e:
        common.warn(KIND, str(e))
        return 1
    out = common.ensure_parent(Path(args.output))
    rows.to_csv(out, index=False)
    common.say(KIND, f"wrote {len(rows)} labelled rows of {batch.source} to {out}")
    return 0


if __name__ == "__main__":
    run_then_leave(main)
