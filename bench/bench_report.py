"""Time `mlops report` after a run, and the DVC calls it is made of.

    .venv/bin/python bench/bench_report.py [--repeat 7] [--repo DIR]
        [--json .mlops/bench/report.json]

The repository is the one tests/test_report.py reports on: the bundled
example run and committed on `main`, then run again on a branch with fewer
trees (two runs, a minute or two; --repo reuses one made before). Then, in
turn, each round times `mlops report`, the process it starts for DVC's two
diffs (`python -m runner.report main`), the two `python -m dvc ... diff`
commands the report ran before, and `mlops validate`. Medians of wall and
CPU time (the process and its children); a Markdown table and JSON.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_cli import DVC, ENV, MLOPS, ROOT, copy_example, report, timed


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True)


def make_repo(dest: Path) -> Path:
    """The example's run on main, and a branch that re-ran with fewer trees."""
    repo = copy_example(dest)
    git(repo, "config", "user.email", "bench@example.com")
    git(repo, "config", "user.name", "bench")
    git(repo, "checkout", "-q", "-b", "main")
    subprocess.run([*MLOPS, "run"], cwd=repo, env=ENV, check=True, capture_output=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    git(repo, "checkout", "-q", "-b", "fewer-trees")
    spec = repo / "mlops.yaml"
    spec.write_text(spec.read_text().replace("n_estimators: 200", "n_estimators: 50"))
    subprocess.run([*MLOPS, "run"], cwd=repo, env=ENV, check=True, capture_output=True)
    return repo


CASES = {
    "mlops report": [*MLOPS, "report", "--output", "{out}"],
    "  its DVC process: both diffs (python -m runner.report main)": [
        sys.executable, "-m", "runner.report", "main",
    ],
    "  before: dvc metrics diff main --all --json": [
        *DVC, "metrics", "diff", "main", "--all", "--json",
    ],
    "  before: dvc params diff main --json": [*DVC, "params", "diff", "main", "--json"],
    "mlops validate": [*MLOPS, "validate"],
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--repo", type=Path, help="a repository made before")
    parser.add_argument("--json", type=Path, default=ROOT / ".mlops/bench/report.json")
    parser.add_argument(
        "--before", type=Path, help="another tree whose `mlops report` runs in turn"
    )
    args = parser.parse_args()
    cases = dict(CASES)
    envs = {}
    if args.before:
        label = f"mlops report, by {args.before}"
        cases[label] = CASES["mlops report"]
        envs[label] = {**ENV, "PYTHONPATH": str(args.before)}
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or make_repo(Path(tmp) / "repo")
        out = str(Path(tmp) / "out")
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(args.repeat):  # in turn: each case sees the same load
            for label, command in cases.items():
                argv = [a.format(out=out) for a in command]
                runs[label].append(timed(argv, repo, envs.get(label)))
    rows = [
        {
            "command": label,
            "wall": statistics.median(w for w, _ in times),
            "cpu": statistics.median(c for _, c in times),
            "runs": times,
        }
        for label, times in runs.items()
    ]
    report(rows, f"median of {args.repeat} rounds", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
