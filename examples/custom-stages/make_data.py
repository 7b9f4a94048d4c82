"""Write data/readings.csv: synthetic daily machine readings, seeded.

Every row is drawn here: one machine's day (temperature, vibration, pressure,
speed, hours since its last service) and whether it failed the next day, more
likely when it runs hot, shakes, or is long overdue a service. A few
temperatures are the sensor's error code, -999, which scripts/features.py
drops. No real data is copied.

    python make_data.py        # rewrites data/readings.csv, same bytes each time
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 5
ROWS = 600
SENSOR_ERROR = -999
SENSOR_ERROR_SHARE = 0.02


def make(rng: np.random.Generator) -> pd.DataFrame:
    machine = rng.integers(1, 21, ROWS)
    temperature = rng.normal(72, 7, ROWS)
    vibration = np.abs(rng.normal(3.0, 1.1, ROWS))
    pressure = rng.normal(5.5, 0.6, ROWS)
    rpm = rng.normal(1500, 180, ROWS)
    hours = rng.uniform(0, 2000, ROWS)
    risk = (
        -3.6 + 0.12 * (temperature - 72) + 0.9 * (vibration - 3)
        + 0.0016 * hours + 0.002 * (pressure * rpm / 1000 - 8.25) * 100
    )  # fmt: skip
    failed = (rng.random(ROWS) < 1 / (1 + np.exp(-risk))).astype(int)
    temperature[rng.random(ROWS) < SENSOR_ERROR_SHARE] = SENSOR_ERROR
    return pd.DataFrame(
        {
            "machine": [f"M{m:02d}" for m in machine],
            "temperature": temperature.round(1),
            "vibration": vibration.round(2),
            "pressure": pressure.round(2),
            "rpm": rpm.round(0).astype(int),
            "hours_since_service": hours.round(0).astype(int),
            "failed": failed,
        }
    )


def main() -> None:
    out = Path(__file__).resolve().parent / "data" / "readings.csv"
    make(np.random.default_rng(SEED)).to_csv(out, index=False, lineterminator="\n")
    print(f"wrote {out}")  # noqa: T201


if __name__ == "__main__":
    main()
