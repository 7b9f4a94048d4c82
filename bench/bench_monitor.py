"""Time the drift check on a million rows: the issue asks for 1M x 30 read
from disk and checked in under 10 s with under 3 GB.

    nice -n 10 .venv/bin/python bench/bench_monitor.py [--rows N] [--log-rows N]
        [--repeat 3] [--json .mlops/bench/monitor.json]

Writes a reference (a train split of 100k rows) and a current batch (1M rows)
of 30 columns (25 numeric, 5 categorical; half of them drifted) as Parquet,
and the current batch again as a prediction log. Each measurement runs in a
fresh process started by a parent that never held the data, so its peak
memory (ru_maxrss) is its own and includes the imports:

- ``parquet``: read both files, score every column (stages.monitor.drift);
- ``log``: the same from the prediction log (stages.monitor.current.read_log);
- ``report``: deepchecks' FeatureDrift on the report's sample, import included;
- ``deepchecks-all`` (with ``--deepchecks-all``): FeatureDrift on every row,
  what computing the scores with deepchecks would cost.

Each check runs ``--repeat`` times (3 by default) on the same files; the
table shows the median wall time, the median CPU time (user + system, all
threads: on a machine others share, the steadier figure of the two) and the
largest peak, and ``--json`` gets every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NUMERIC, CATEGORICAL = 25, 5
REFERENCE_ROWS = 100_000


def frame(rows: int, seed: int, shift: float):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {f"n{i}": rng.normal(shift * (i % 2), 1, rows) for i in range(NUMERIC)}
    for i in range(CATEGORICAL):
        p = [0.5, 0.3, 0.2] if shift == 0 or i % 2 else [0.2, 0.3, 0.5]
        data[f"c{i}"] = rng.choice(["a", "b", "c"], rows, p=p)
    return pd.DataFrame(data)


def write_data(folder: Path, rows: int, log_rows: int) -> None:
    import orjson

    frame(REFERENCE_ROWS, 1, 0.0).to_parquet(folder / "reference.parquet")
    current = frame(rows, 2, 0.6)
    current.to_parquet(folder / "current.parquet")
    logs = folder / "log"
    logs.mkdir()
    records = current.head(log_rows).to_dict("records")
    with (logs / "predictions-bench-1.jsonl").open("wb") as f:
        for i, record in enumerate(records):
            f.write(
                orjson.dumps(
                    {
                        "request_id": str(i),
                        "time": "2026-12-01T10:00:00+00:00",
                        "model": "bench",
                        "model_version": "1",
                        "predictor": "onnx",
                        "inputs": [record],
                        "outputs": [i % 2],
                    }
                )
                + b"\n"
            )


def child(what: str, folder: Path) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    start = time.perf_counter()
    import pandas as pd

    from stages.monitor import current, drift

    reference = pd.read_parquet(folder / "reference.parquet")
    if what == "parquet":
        batch = pd.read_parquet(folder / "current.parquet")
    elif what == "log":
        batch = current.read_log(folder / "log").frame
    if what in ("parquet", "log"):
        limits = drift.Thresholds(default=0.2, min_rows=100)
        problems, scores = drift.check_features(reference, batch, limits)
        drifted = sum(s.drifted for s in scores)
        if problems or drifted != NUMERIC // 2 + (CATEGORICAL + 1) // 2:
            raise SystemExit(f"wrong verdict: {problems or drifted}")
        rows = len(batch)
    else:
        rows = _deepchecks(what, folder, reference)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_gb": usage.ru_maxrss / 1024**2,
        "rows": rows,
    }


def _deepchecks(what: str, folder: Path, reference) -> int:  # type: ignore[no-untyped-def]
    import pandas as pd

    from stages.monitor import report

    batch = pd.read_parquet(folder / "current.parquet")
    if what == "report":
        report.write(
            folder / "report.html", reference, batch, None, seed=0, classes=None
        )
        return report.SAMPLE_ROWS
    import warnings

    warnings.simplefilter("ignore")
    from deepchecks.tabular import Dataset
    from deepchecks.tabular.checks import FeatureDrift

    cat = [c for c in batch.columns if c.startswith("c")]
    batch.index += len(reference)
    FeatureDrift(n_samples=len(batch), n_top_columns=30).run(
        Dataset(reference, cat_features=cat), Dataset(batch, cat_features=cat)
    )
    return len(batch)


def measure(what: str, folder: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.splitlines()[-1]
    return json.loads(out)  # type: ignore[no-any-return]


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """The medians of the runs' times, and the largest peak."""
    return {
        "rows": runs[0]["rows"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "peak_gb": max(r["peak_gb"] for r in runs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--log-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=".mlops/bench/monitor.json")
    ap.add_argument("--deepchecks-all", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("WHAT", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--write", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    if args.write:
        write_data(Path(args.write), args.rows, args.log_rows)
        return 0
    whats = ["parquet", "log", "report"] + ["deepchecks-all"] * args.deepchecks_all
    report: dict[str, object] = {
        "rows": args.rows,
        "log_rows": args.log_rows,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "checks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # In a child too: a process's peak (ru_maxrss) survives fork and exec,
        # so the measured children must not start from a parent that held
        # the generated frames (it made every figure at least 1.9 GB).
        subprocess.run(
            [sys.executable, __file__, "--write", tmp, "--rows", str(args.rows),
             "--log-rows", str(args.log_rows)],
            check=True, cwd=ROOT,
        )  # fmt: skip
        report["log_mb"] = (
            sum(p.stat().st_size for p in (folder / "log").iterdir()) / 1e6
        )
        print(f"median of {args.repeat} runs; {os.cpu_count()} cores\n")
        print("| check | rows | seconds | CPU seconds | peak memory (GB) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for what in whats:
            runs = [measure(what, folder) for _ in range(args.repeat)]
            m = summary(runs)
            report["checks"][what] = {**m, "runs": runs}  # type: ignore[index]
            print(
                f"| {what} | {int(m['rows']):,} | {m['seconds']:.1f} | "
                f"{m['cpu_seconds']:.1f} | {m['peak_gb']:.2f} |",
                flush=True,
            )
    out = ROOT / args.json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
