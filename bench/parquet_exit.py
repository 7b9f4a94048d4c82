"""How often does a process that read Parquet abort as it exits?

pyarrow's reader threads can outlive the interpreter: the process has done its
work, then dies with "terminate called without an active exception" (exit
134, apache/arrow#34314), and DVC reads that as a failed stage. The abort is
rare and needs load, so a unit test cannot tell one way of reading from
another; this script can. It runs each way of reading many times in fresh
processes, four at a time on a busy machine's two cores, from a local path and
from a URL served on 127.0.0.1, and counts the processes that did not exit 0.

    .venv/bin/python bench/parquet_exit.py --runs 200
    .venv/bin/python bench/parquet_exit.py --runs 100 --only ours-url
"""

from __future__ import annotations

import argparse
import functools
import http.server
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the file without a log line per request (the table is the output)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


# name -> code run by `python -c`, with {path} and {url} filled in.
WAYS = {
    "pandas-path": "import pandas as pd; pd.read_parquet({path!r})",
    "pandas-url-nothreads": (
        "import pandas as pd; pd.read_parquet({url!r}, use_threads=False)"
    ),
    "read_table-path": (
        "import pyarrow.parquet as pq; pq.read_table({path!r}).to_pandas()"
    ),
    "read_table-buffer": (
        "import pyarrow as pa, pyarrow.parquet as pq; "
        "pq.read_table(pa.BufferReader(open({path!r}, 'rb').read())).to_pandas()"
    ),
    "ours-path": "from stages import common; common.read_parquet({path!r})",
    "ours-url": "from stages import common; common.read_parquet({url!r})",
}


def _once(code: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="processes per way")
    parser.add_argument("--at-once", type=int, default=4)
    parser.add_argument("--only", action="append", choices=sorted(WAYS))
    args = parser.parse_args()

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        pd.DataFrame({"x": range(500), "y": [i % 2 for i in range(500)]}).to_parquet(
            path
        )
        handler = functools.partial(_QuietHandler, directory=tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/data.parquet"
        print(f"{'way':<22} {'aborted':>8} {'runs':>5}")
        for name in args.only or WAYS:
            code = WAYS[name].format(path=str(path), url=url)
            with ThreadPoolExecutor(max_workers=args.at_once) as pool:
                codes = list(pool.map(_once, [code] * args.runs))
            bad = sum(1 for c in codes if c != 0)
            print(f"{name:<22} {bad:>8} {args.runs:>5}", flush=True)
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
