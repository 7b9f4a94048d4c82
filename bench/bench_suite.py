"""Time the whole test suite as `make test` runs it, in a clean clone.

    .venv/bin/python bench/bench_suite.py [--repeat 1] [--json .mlops/bench/suite.json]

Each round clones this repository's HEAD into a temporary folder (what CI
gets) and runs pytest there with this interpreter and the arguments of the
Makefile's `test` recipe, read from it, with ``--durations=0`` so that every
step's time is printed. Set-up is not timed (the goal is "after set-up"): the
clone uses this checkout's interpreter, and its `.tools` (checkov) through a
link. ``PYTHONPATH`` points at the clone, so its code is what runs.

Per round: tests passed, wall time and CPU time (user + system of pytest and
of every process it waited for), and the machine's speed just before and after
it: the CPU-seconds of a fresh ``python -c "import mlflow"`` (the cost most of
the suite's processes pay) and of a fixed pure-Python loop, medians of three.
The same tree's suite took 612 CPU-seconds one day and 890-956 on another
machine of the same kind, where `import mlflow` cost twice as much: without
these two figures, rounds from different machines cannot be compared.
Per module: worker seconds (setup, call and teardown summed from
``--durations``), the median over the rounds, slowest first. CPU time says
more than wall time on a shared or virtual machine, where the same tree's runs
spread by half a minute. Prints Markdown tables and writes
every figure as JSON; exits 1 if a round had a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench_cli import ENV, ROOT

_DURATION = re.compile(r"^\s*([\d.]+)s (?:setup|call|teardown)\s+([^:\s]+)::")
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped)")


def pytest_args(makefile: Path) -> list[str]:
    """The arguments `make test` gives pytest, with every step's duration."""
    recipe = makefile.read_text(encoding="utf-8").split("\ntest:", 1)[1]
    line = next(x for x in recipe.splitlines() if " -m pytest" in x)
    args = shlex.split(line.split(" -m pytest", 1)[1])
    return [re.sub(r"^--durations=\d+$", "--durations=0", a) for a in args]


# The fixed loop: ten million additions, pure interpreter work.
LOOP = "s = 0\nfor i in range(10_000_000):\n    s += i * i\n"
PROBES = {"import mlflow": "import mlflow", "loop": LOOP}


def _cpu_of(code: str) -> float:
    """CPU-seconds of a fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def machine() -> dict[str, float]:
    """The machine's speed now: each probe's CPU-seconds, median of three."""
    return {
        name: statistics.median(_cpu_of(code) for _ in range(3))
        for name, code in PROBES.items()
    }


def one_round(args: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(
            ["git", "clone", "-q", str(ROOT), str(clone)], check=True, env=ENV
        )
        if (ROOT / ".tools").exists():
            (clone / ".tools").symlink_to(ROOT / ".tools")
        env = {**ENV, "PYTHONPATH": str(clone)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        lines = []
        with subprocess.Popen(
            [sys.executable, "-m", "pytest", *args], cwd=clone, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) as proc:  # fmt: skip
            for line in proc.stdout or ():  # pytest's progress, as it comes
                sys.stderr.write(line)
                lines.append(line.rstrip("\n"))
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    modules: dict[str, float] = defaultdict(float)
    for line in lines:
        if m := _DURATION.match(line):
            modules[m.group(2)] += float(m.group(1))
    last = next((x for x in reversed(lines) if x.strip()), "")
    counts = {kind.rstrip("s"): int(n) for n, kind in _COUNTS.findall(last)}
    return {
        "wall": wall,
        "cpu": cpu,
        "exit": proc.returncode,
        "counts": counts,
        "summary": last,
        "modules": dict(modules),
    }


def probed_round(args: list[str]) -> dict[str, object]:
    """One round, the machine probed before and after it (the mean of both)."""
    first = machine()
    result = one_round(args)
    last = machine()
    result["machine"] = {k: (first[k] + last[k]) / 2 for k in PROBES}
    return result


def report(rounds: list[dict], args: list[str], path: Path, top: int) -> None:
    load = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
        f"{load[0]:.1f}; pytest {' '.join(args)}\n"
    )
    print(
        "| round | passed | failed | wall (s) | CPU (s) | CPU / wall "
        "| `import mlflow` (CPU s) | loop (CPU s) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, r in enumerate(rounds, 1):
        c = r["counts"]
        m = r["machine"]
        print(
            f"| {i} | {c.get('passed', 0)} | {c.get('failed', 0) + c.get('error', 0)} "
            f"| {r['wall']:.0f} | {r['cpu']:.0f} | {r['cpu'] / r['wall']:.2f} "
            f"| {m['import mlflow']:.2f} | {m['loop']:.2f} |"
        )
    names = {m for r in rounds for m in r["modules"]}
    median = {
        m: statistics.median(r["modules"].get(m, 0.0) for r in rounds) for m in names
    }
    print(f"\n| module (the {top} slowest) | worker s, median |")
    print("| --- | ---: |")
    for m in sorted(median, key=lambda k: -median[k])[:top]:
        print(f"| {m} | {median[m]:.0f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"load": load, "pytest": args, "rounds": rounds, "modules": median}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="modules in the table")
    parser.add_argument("--json", type=Path, default=ROOT / ".mlops/bench/suite.json")
    args = parser.parse_args()
    pytest = pytest_args(ROOT / "Makefile")
    rounds = []
    for i in range(args.repeat):
        print(f"round {i + 1} of {args.repeat}", file=sys.stderr, flush=True)
        rounds.append(probed_round(pytest))
    report(rounds, pytest, args.json, args.top)
    return 0 if all(r["exit"] == 0 for r in rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
