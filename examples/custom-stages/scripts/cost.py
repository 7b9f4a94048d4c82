"""A team's own business metric, run by DVC as the `cost` stage after evaluate.

Turns the model's recall and precision on the test rows into what its mistakes
would cost: a missed failure costs a repair, a false alarm an inspection. The
prices are the stage's `with:` settings (params.yaml); the result is a DVC
metric, so `dvc metrics diff` and the pull-request report show it.

    python scripts/cost.py artifacts/evaluate/metrics.json \
        artifacts/preprocess/test.parquet artifacts/cost/cost.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml


def settings(stage: str) -> dict:
    with open("params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["stages"][stage]["with"]


def main(metrics_path: str, test_path: str, dest: str) -> None:
    conf = settings("cost")
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    # ParquetFile, not pd.read_parquet or pq.read_table: their reader threads
    # can abort the process as it exits (apache/arrow#34314).
    test = pq.ParquetFile(test_path).read().to_pandas()
    failures = int((test["failed"] == 1).sum())
    caught = metrics["recall"] * failures
    missed = failures - caught
    alarms = caught / metrics["precision"] - caught if metrics["precision"] else 0.0
    cost = missed * conf["missed_failure"] + alarms * conf["false_alarm"]
    out = {
        "test_rows": len(test),
        "missed_failures": round(missed, 2),
        "false_alarms": round(alarms, 2),
        "cost": round(cost, 2),
        "cost_per_100_rows": round(100 * cost / len(test), 2),
    }
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    Path(dest).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"cost: {out['cost']:.0f} on {len(test)} test rows")  # noqa: T201


if __name__ == "__main__":
    main(*sys.argv[1:])
