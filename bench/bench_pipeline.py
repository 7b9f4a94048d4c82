"""Wall time of each stage of a cold `mlops run` on the example, and the total,
with the warm stage server (stages/warm.py, the default) and without it
(``MLOPS_WARM_STAGES=0``: one fresh process per stage), beside the same ML work
done by one plain script (bench/plain_pipeline.py); then what sharing that run
costs and saves: `mlops push`, and `mlops run --pull` in a second checkout that
restores every stage (main after a merge).

    .venv/bin/python bench/bench_pipeline.py   # --repeat 3 --json FILE

The difference is the framework's overhead: imports paid again by every stage
that the server does not stand in for, DVC's hashing and lock file, MLflow
store set-up, and the extra things the stages do (deepchecks HTML report, more
plots, tags).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cli import ENV, MLOPS, copy_example

from stages import warm

DONE = re.compile(r"^--- (\S+): done in ([0-9.]+)s$")
BENCH = Path(__file__).resolve().parent


def _timed(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        args, cwd=cwd, env=env or ENV, check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, out


def _stage_times(out: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for line in out.splitlines()
        if (m := DONE.match(line))
    }


def _share(repo: Path, tmp: Path) -> dict[str, float]:
    """Push the run, clone the sources elsewhere and restore it there."""
    push, _ = _timed([*MLOPS, "push"], repo)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run([*git, "add", "mlops.yaml", "stages"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "sources"], cwd=repo, check=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(tmp / "clone")], check=True)
    restore, out = _timed([*MLOPS, "run", "--pull"], tmp / "clone")
    if "0 ran" not in out.splitlines()[-1]:
        raise SystemExit(f"the second checkout recomputed stages:\n{out}")
    return {"push": push, "restore": restore}


def _round(tmp: Path, warm_first: bool) -> dict[str, dict[str, float]]:
    """One warm run, one run with a process per stage, one plain script, each
    in a fresh copy; the two runs in the order given."""
    repo = copy_example(tmp / "repo")
    spec = repo / "mlops.yaml"
    remote = f"url: {tmp / 'remote'}"
    spec.write_text(spec.read_text().replace("url: .mlops/dvc-remote", remote))
    cold_repo = tmp / "cold"
    shutil.copytree(repo, cold_repo, symlinks=True)
    runs = [("warm", repo, ENV), ("cold", cold_repo, {**ENV, warm.SWITCH: "0"})]
    result: dict[str, dict[str, float]] = {}
    for name, where, env in runs if warm_first else runs[::-1]:
        total, out = _timed([*MLOPS, "run"], where, env)
        result[name] = {**_stage_times(out), "total": total}
    plain_dir = tmp / "plain"
    plain_dir.mkdir()
    result["plain"] = json.loads(
        subprocess.run(
            [sys.executable, str(BENCH / "plain_pipeline.py"), str(plain_dir)],
            cwd=plain_dir, env=ENV, check=True, capture_output=True, text=True,
        ).stdout.splitlines()[-1]
    )  # fmt: skip
    result["shared"] = _share(repo, tmp)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=BENCH.parent / ".mlops/bench/pipeline.json"
    )
    args = parser.parse_args()
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(_round(Path(tmp), warm_first=i % 2 == 0))

    def med(kind: str, key: str) -> float:
        return statistics.median(r[kind].get(key, 0.0) for r in rounds)

    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load {load[0]:.1f}; median of {args.repeat}\n")
    print("| stage | `mlops run` (s) | one process per stage (s) | plain script (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name in rounds[0]["warm"]:
        if name != "total":
            w, c, p = med("warm", name), med("cold", name), med("plain", name)
            print(f"| {name} | {w:.1f} | {c:.1f} | {p:.1f} |")
    print(f"| imports (paid once by the script) | | | {med('plain', 'imports'):.1f} |")
    warm_t, cold_t, plain_t = (
        med("warm", "total"),
        med("cold", "total"),
        med("plain", "total"),
    )
    print(
        f"| **whole cold run** | **{warm_t:.1f}** | **{cold_t:.1f}** "
        f"| **{plain_t:.1f}** |"
    )
    ratios = [r["warm"]["total"] / r["plain"]["total"] for r in rounds]
    cold_ratios = [r["cold"]["total"] / r["plain"]["total"] for r in rounds]
    print(
        f"\nratio to the plain script, median of the rounds' ratios: "
        f"{statistics.median(ratios):.2f}x "
        f"(one process per stage: {statistics.median(cold_ratios):.2f}x)"
    )
    print()
    print("| sharing the run | seconds |")
    print("| --- | ---: |")
    print(f"| `mlops push` | {med('shared', 'push'):.1f} |")
    print(
        "| `mlops run --pull` in a fresh clone, all restored | "
        f"{med('shared', 'restore'):.1f} |"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"load": load, "rounds": rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
