"""Write data/penguins.csv: synthetic penguins, seeded, so the example is offline.

Shaped after the Palmer Archipelago penguins (three species on three islands),
but every row is drawn here from per-species normal distributions: no real
measurement is copied. Some sex and body-measurement values are left out on
purpose, so the example shows imputation and `max_null_share` rules.

    python make_data.py        # rewrites data/penguins.csv, same bytes each time
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7
ROWS = {"Adelie": 150, "Gentoo": 120, "Chinstrap": 70}
# (bill length, bill depth, flipper length, body mass): mean, sd per species.
SHAPE = {
    "Adelie": ((39.8, 3.4), (18.1, 1.4), (190.0, 6.5), (3700.0, 460.0)),
    "Gentoo": ((47.5, 3.1), (15.0, 1.0), (217.0, 6.5), (5080.0, 500.0)),
    "Chinstrap": ((46.0, 3.6), (17.6, 1.3), (196.0, 7.1), (3730.0, 380.0)),
}
ISLANDS = {
    "Adelie": (["Biscoe", "Dream", "Torgersen"], [0.3, 0.35, 0.35]),
    "Gentoo": (["Biscoe"], [1.0]),
    "Chinstrap": (["Dream"], [1.0]),
}
# Shares of values left out: sex not recorded, a bird not weighed or measured.
MISSING = {"sex": 0.04, "body_mass_g": 0.02, "flipper_length_mm": 0.01}
MEASURES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


def make(rng: np.random.Generator) -> pd.DataFrame:
    parts = []
    for species, n in ROWS.items():
        islands, weights = ISLANDS[species]
        part = {
            "species": [species] * n,
            "island": rng.choice(islands, size=n, p=weights),
            "sex": rng.choice(["male", "female"], size=n),
            "year": rng.choice([2007, 2008, 2009], size=n),
        }
        for name, (mean, sd) in zip(MEASURES, SHAPE[species], strict=True):
            part[name] = rng.normal(mean, sd, size=n)
        parts.append(pd.DataFrame(part))
    df = pd.concat(parts, ignore_index=True)
    df = df.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    df["bill_length_mm"] = df["bill_length_mm"].round(1)
    df["bill_depth_mm"] = df["bill_depth_mm"].round(1)
    df["flipper_length_mm"] = df["flipper_length_mm"].round(0)
    df["body_mass_g"] = (df["body_mass_g"] / 25).round(0) * 25
    for column, share in MISSING.items():
        df.loc[rng.random(len(df)) < share, column] = None
    columns = ["species", "island", *MEASURES, "sex", "year"]
    return df.loc[:, columns]


def main() -> None:
    out = Path(__file__).resolve().parent / "data" / "penguins.csv"
    make(np.random.default_rng(SEED)).to_csv(out, index=False, lineterminator="\n")
    print(f"wrote {out}")  # noqa: T201


if __name__ == "__main__":
    main()
