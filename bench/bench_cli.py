"""Time the CLI's fast paths and a no-op run against a no-op `dvc repro`.

    .venv/bin/python bench/bench_cli.py [--repeat 7] [--repo DIR]
        [--json .mlops/bench/cli.json]

Works on a throw-away copy of the bundled example (or on --repo, a copy
that has already run): the first `mlops run` there is the cold run, every
later one has nothing to do. The no-op `mlops run` and `dvc repro` run
alternately, one after the other, so that both see the same load; the
ratio is taken per pair and its median reported. Each row gives the median
wall time and the median CPU time (user + system of the process and its
children). Prints a Markdown table and writes every time as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.dvcstart import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    **QUIET_ENV,
    "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
}
MLOPS = [sys.executable, "-m", "runner.cli"]
DVC = [sys.executable, "-m", "dvc"]


def timed(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and everything it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        args, cwd=cwd, env=env or ENV, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {cwd} failed:\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


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


def row(label: str, runs: list[tuple[float, float]]) -> dict[str, object]:
    return {
        "command": label,
        "wall": statistics.median(w for w, _ in runs),
        "cpu": statistics.median(c for _, c in runs),
        "runs": runs,
    }


def measure(repo: Path, repeat: int) -> list[dict[str, object]]:
    rows = []
    fast = [
        ("mlops --help", [*MLOPS, "--help"]),
        ("mlops validate", [*MLOPS, "validate"]),
        ("mlops compile --check", [*MLOPS, "compile", "--check"]),
    ]
    for label, command in fast:
        rows.append(row(label, [timed(command, repo) for _ in range(repeat)]))
    timed([*MLOPS, "run"], repo)  # settle: nothing left to do after this one
    pairs = [
        (timed([*MLOPS, "run"], repo), timed([*DVC, "repro", "dvc.yaml"], repo))
        for _ in range(repeat)
    ]
    rows.append(row("mlops run, nothing changed", [m for m, _ in pairs]))
    rows.append(row("dvc repro dvc.yaml, nothing changed", [d for _, d in pairs]))
    rows.append(
        {
            "command": "ratio: no-op mlops run / no-op dvc repro (median of pairs)",
            "wall": statistics.median(m[0] / d[0] for m, d in pairs),
            "cpu": statistics.median(m[1] / d[1] for m, d in pairs),
            "runs": [],
        }
    )
    rows.append(
        row("dvc status", [timed([*DVC, "status"], repo) for _ in range(repeat)])
    )
    rows.append(
        row(
            "python -c pass",
            [timed([sys.executable, "-c", "pass"], repo) for _ in range(repeat)],
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--repo", type=Path, help="a copy of the example that has run")
    parser.add_argument("--json", type=Path, default=ROOT / ".mlops/bench/cli.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold: list[dict[str, object]] = []
        repo = args.repo
        if repo is None:
            repo = copy_example(Path(tmp))
            cold = [
                row(
                    "mlops run, cold (every stage runs)", [timed([*MLOPS, "run"], repo)]
                )
            ]
        rows = cold + measure(repo, args.repeat)
    report(rows, f"median of {args.repeat} runs", args.json)
    return 0


def report(rows: list[dict], how: str, path: Path) -> None:
    """Print the rows as a Markdown table under the machine's line; write JSON."""
    load = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
        f"{load[0]:.1f}; {how}\n"
    )
    print("| command | wall (s) | CPU (s) |")
    print("| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['command']} | {r['wall']:.2f} | {r['cpu']:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"load": load, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
