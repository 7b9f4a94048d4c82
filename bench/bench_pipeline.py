"""Wall time of each stage of a cold `mlops run` on the example, and the total,
beside the same ML work done by one plain script (bench/plain_pipeline.py).

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


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_example(Path(tmp) / "repo")
        start = time.perf_counter()
        out = subprocess.run(
            [*MLOPS, "run"],
            cwd=repo,
            env=ENV,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        total = time.perf_counter() - start
        stages = dict(
            m.groups() for line in out.splitlines() if (m := DONE.match(line))
        )
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
