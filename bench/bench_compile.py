"""Time `mlops compile` of generated specs with N custom stages in a tree.

    .venv/bin/python bench/bench_compile.py [--sizes 10,100,1000,5000]
        [--repeat 3] [--json .mlops/bench/compile.json]

Each spec is the bundled example's built-in pipeline (ingest to register)
plus N custom stages in a binary tree rooted at ingest's data: stage i reads
its parent's output and a script of its own, has a parameter, and writes one
output (every fifth also a metrics file). Every target is compiled (DVC,
GitHub Actions, Argo, the install files). Each compile runs in a fresh
process into a fresh folder (every file written), so imports and writes
are counted as a user pays them; then `--check` on the result. The table
gives medians of wall and CPU time (user + system), the CPU ratio to the
previous size and the CPU time per stage: CPU time moves less with the
machine's load than wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from bench_cli import ENV, timed

ROOT = Path(__file__).resolve().parent.parent
MLOPS = [sys.executable, "-m", "runner.cli"]
DEFAULT_SIZES = "10,100,1000,5000"


def custom_stage(i: int) -> dict[str, object]:
    """Stage i of the tree: child of stage (i - 1) // 2, ingest's at the root."""
    parent = "artifacts/ingest/data.parquet" if i == 0 else f"work/s{(i - 1) // 2}.csv"
    stage: dict[str, object] = {
        "run": f"python scripts/step.py {parent} work/s{i}.csv",
        "deps": ["scripts/step.py", parent],
        "outs": [f"work/s{i}.csv"],
        "with": {"factor": i % 7},
    }
    if i % 5 == 0:
        stage["metrics"] = [f"reports/s{i}.json"]
    return stage


def spec_text(n: int) -> str:
    """The example's mlops.yaml with n custom stages added to its pipeline."""
    # One flow mapping a line: 5,000 stages in block style would pass the
    # loader's 1 MB limit (runner.yamlsource.MAX_BYTES).
    lines = [(ROOT / "mlops.yaml").read_text().split("\ngates:")[0]]
    for i in range(n):
        one = yaml.safe_dump(
            {f"s{i}": custom_stage(i)}, default_flow_style=True, width=10_000
        )
        lines.append("  " + one.strip()[1:-1])
    gates = (ROOT / "mlops.yaml").read_text().split("\ngates:")[1]
    return "\n".join(lines) + "\n\ngates:" + gates


def make_repo(dest: Path, text: str) -> Path:
    dest.mkdir(parents=True)
    (dest / "mlops.yaml").write_text(text)
    shutil.copytree(ROOT / "schema", dest / "schema")
    return dest


def measure(tmp: Path, n: int, repeat: int, before: Path | None) -> dict[str, object]:
    """Compiles into a fresh folder (every file written), then --check; with
    before, a compile by that tree's runner just before each of this one's."""
    text = spec_text(n)
    runs, old = [], []
    for r in range(repeat):
        if before is not None:
            repo = make_repo(tmp / f"n{n}-{r}-before", text)
            env = {**ENV, "PYTHONPATH": str(before)}
            old.append(timed([*MLOPS, "compile"], repo, env))
        repo = make_repo(tmp / f"n{n}-{r}", text)
        runs.append(timed([*MLOPS, "compile"], repo))
    checks = [timed([*MLOPS, "compile", "--check"], repo) for _ in range(repeat)]
    row: dict[str, object] = {
        "stages": n,
        "spec_bytes": len(text.encode()),
        "compile": runs,
        "check": checks,
        "wall": statistics.median(w for w, _ in runs),
        "cpu": statistics.median(c for _, c in runs),
        "check_wall": statistics.median(w for w, _ in checks),
    }
    if old:
        row["before"] = old
        row["before_wall"] = statistics.median(w for w, _ in old)
        row["before_cpu"] = statistics.median(c for _, c in old)
    return row


def print_table(rows: list[dict[str, Any]], repeat: int) -> None:
    load = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
        f"{load[0]:.1f}; median of {repeat} compiles, each a fresh process\n"
    )
    before = "before" in rows[0]
    head = "| custom stages | spec KB | compile wall (s) | CPU (s) | CPU x previous "
    head += "| CPU ms per stage | --check wall (s) |"
    if before:
        head += " before: wall (s) | CPU (s) |"
    print(head)
    print("|" + " ---: |" * (head.count("|") - 1))
    previous = None
    for row in rows:
        n, cpu = row["stages"], row["cpu"]
        ratio = f"{cpu / previous:.1f}" if previous else ""
        line = (
            f"| {n:,} | {row['spec_bytes'] / 1024:.0f} | {row['wall']:.2f} "
            f"| {cpu:.2f} | {ratio} | {1000 * cpu / n:.2f} | {row['check_wall']:.2f} |"
        )
        if before and "before" in row:
            line += f" {row['before_wall']:.2f} | {row['before_cpu']:.2f} |"
        elif before:
            line += " | |"
        print(line)
        previous = cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / ".mlops/bench/compile.json")
    parser.add_argument(
        "--before",
        type=Path,
        help="another tree (a checkout's root) whose compiler runs beside this one",
    )
    parser.add_argument("--before-up-to", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            before = args.before if n <= args.before_up_to else None
            rows.append(measure(Path(tmp), n, args.repeat, before))
    print_table(rows, args.repeat)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    args.json.write_text(json.dumps({"load": load, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
