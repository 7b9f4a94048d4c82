"""A team's own feature step, run by DVC as the `features` stage.

Reads the raw readings, drops rows whose temperature is the sensor's error
code, and adds two features. Its settings come from params.yaml, where
`mlops compile` puts the stage's `with:` block: a change to them re-runs it.

    python scripts/features.py data/readings.csv artifacts/features/readings.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml


def settings(stage: str) -> dict:
    with open("params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["stages"][stage]["with"]


def main(source: str, dest: str) -> None:
    conf = settings("features")
    df = pd.read_csv(source)
    ok = df["temperature"] != conf["sensor_error"]
    df = df.loc[ok].copy()
    df["over_limit"] = (df["temperature"] - conf["temperature_limit"]).clip(lower=0)
    df["load"] = (df["pressure"] * df["rpm"] / 1000).round(3)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False, lineterminator="\n")
    print(f"features: {len(df)} rows kept, {int((~ok).sum())} sensor errors dropped")  # noqa: T201


if __name__ == "__main__":
    main(*sys.argv[1:])
