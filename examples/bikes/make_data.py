"""Write data/rentals.csv: a synthetic daily bike-rental count, seeded.

Every row is drawn here: a year and a half of days, each with its season,
weekday, holiday flag and weather, and a rental count that rises with warmth,
falls with rain and wind, and differs between workdays and weekends. The
count is the target of a regression. No real data is copied.

    python make_data.py        # rewrites data/rentals.csv, same bytes each time
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 11
DAYS = 540
SEASONS = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring",
           5: "spring", 6: "summer", 7: "summer", 8: "summer", 9: "autumn",
           10: "autumn", 11: "autumn"}  # fmt: skip
WEATHER = ["clear", "cloudy", "rain"]
HOLIDAY_SHARE = 0.03
SATURDAY = 5


def make(rng: np.random.Generator) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=DAYS, freq="D")
    doy = dates.dayofyear.to_numpy()
    temp = 12 - 10 * np.cos(2 * np.pi * (doy - 15) / 365) + rng.normal(0, 3, DAYS)
    weather = rng.choice(WEATHER, size=DAYS, p=[0.55, 0.3, 0.15])
    humidity = np.clip(
        55 + 15 * (weather == "rain") + 8 * (weather == "cloudy")
        + rng.normal(0, 10, DAYS), 15, 100
    )  # fmt: skip
    wind = np.abs(rng.normal(14, 6, DAYS))
    weekend = dates.dayofweek.to_numpy() >= SATURDAY
    holiday = (rng.random(DAYS) < HOLIDAY_SHARE).astype(int)  # 0/1: a number, not text
    workday = ~weekend & (holiday == 0)
    trend = np.linspace(0, 150, DAYS)  # the scheme grows
    rentals = (
        1800 + trend + 120 * temp - 3 * (temp - 22).clip(0) ** 2
        - 900 * (weather == "rain") - 250 * (weather == "cloudy")
        - 25 * wind + 350 * workday + rng.normal(0, 250, DAYS)
    ).clip(50)  # fmt: skip
    return pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "season": [SEASONS[m] for m in dates.month],
            "weekday": dates.day_name().str[:3],
            "holiday": holiday,
            "weather": weather,
            "temp_c": temp.round(1),
            "humidity": humidity.round(0),
            "wind_kmh": wind.round(1),
            "rentals": rentals.round(0).astype(int),
        }
    )


def main() -> None:
    out = Path(__file__).resolve().parent / "data" / "rentals.csv"
    make(np.random.default_rng(SEED)).to_csv(out, index=False, lineterminator="\n")
    print(f"wrote {out}")  # noqa: T201


if __name__ == "__main__":
    main()
