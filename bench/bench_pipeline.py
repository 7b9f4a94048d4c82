"""Wall time of each stage of a cold `mlops run` on the example, and the total,
beside the same ML work done by one plain script (bench/plain_pipeline.py);
then what sharing that run costs and saves: `mlops push`, and `mlops run
--pull` in a second checkout that restores every stage (main after a merge).

    .venv/bin/python bench/bench_pipeline.py

The difference is the framework's overhead: one process per stage (imports
paid again), DVC's hashing and lock file, MLflow store set-up, and the extra
things the stages do (deepchecks HTML report, more plots, tags).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cli import ENV, MLOPS, copy_example

DONE = re.compile(r"^--- (\S+): done in ([0-9.]+)s$")
BENCH = Path(__file__).resolve().parent


def _timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        args, cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, out


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


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_example(Path(tmp) / "repo")
        spec = repo / "mlops.yaml"
        remote = f"url: {Path(tmp) / 'remote'}"
        spec.write_text(spec.read_text().replace("url: .mlops/dvc-remote", remote))
        total, out = _timed([*MLOPS, "run"], repo)
        stages = dict(
            m.groups() for line in out.splitlines() if (m := DONE.match(line))
        )
        shared = _share(repo, Path(tmp))
        plain_dir = Path(tmp) / "plain"
        plain_dir.mkdir()
        plain = json.loads(
            subprocess.run(
                [sys.executable, str(BENCH / "plain_pipeline.py"), str(plain_dir)],
                cwd=plain_dir, env=ENV, check=True, capture_output=True, text=True,
            ).stdout.splitlines()[-1]
        )  # fmt: skip
    print("| stage | mlops run (s) | plain script (s) |")
    print("| --- | ---: | ---: |")
    for name, seconds in stages.items():
        print(f"| {name} | {float(seconds):.1f} | {plain.get(name, 0):.1f} |")
    print(f"| imports (paid once by the script) | | {plain['imports']:.1f} |")
    print(f"| **whole cold run** | **{total:.1f}** | **{plain['total']:.1f}** |")
    print()
    print("| sharing the run | seconds |")
    print("| --- | ---: |")
    print(f"| `mlops push` | {shared['push']:.1f} |")
    restore = shared["restore"]
    print(f"| `mlops run --pull` in a fresh clone, all restored | {restore:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
