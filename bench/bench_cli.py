"""Time the CLI's fast paths and a no-op run against a no-op `dvc repro`.

    .venv/bin/python bench/bench_cli.py [--repeat N]

Works on a throw-away copy of the bundled example: the first `mlops run` there
is the cold run, every later one has nothing to do. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY": "1",
    "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
}
MLOPS = [sys.executable, "-m", "runner.cli"]
DVC = [sys.executable, "-m", "dvc"]


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def copy_example(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("mlops.yaml", "stages", "schema"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_example(Path(tmp))
        cold = timed([*MLOPS, "run"], repo)
        rows.append(("mlops run, cold (every stage runs)", [cold]))
        cases = [
            ("mlops --help", [*MLOPS, "--help"]),
            ("mlops validate", [*MLOPS, "validate"]),
            ("mlops compile --check", [*MLOPS, "compile", "--check"]),
            ("mlops run, nothing changed", [*MLOPS, "run"]),
            ("dvc repro, nothing changed", [*DVC, "repro"]),
            ("dvc status", [*DVC, "status"]),
        ]
        for label, command in cases:
            rows.append((label, [timed(command, repo) for _ in range(args.repeat)]))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; median of runs\n")
    print("| command | median (s) | runs |")
    print("| --- | ---: | ---: |")
    for label, times in rows:
        print(f"| {label} | {statistics.median(times):.2f} | {len(times)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
