"""A stage that read Parquet exits 0 (apache/arrow#34314).

pyarrow's reader threads can outlive the interpreter and abort the process as
it exits, after the stage's work is done: exit 134, "terminate called without
an active exception". DVC reads that as a failed stage, so a pipeline failed at
random (a third of the processes using ``pd.read_parquet(path)``, 1 to 2 in 100
for a URL read without threads). Every stage reads through
``stages.common.read_parquet``; here many short processes use it, two at a time
as on a busy runner, and every one must exit 0. Sixteen processes catch the
common failure, not the rare one: ``bench/parquet_exit.py`` counts that.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tests.support import ROOT, quiet_env, serve_folder

LOCAL_RUNS = 12  # at a 1-in-3 abort rate, all 12 pass by chance 1 time in 100
URL_RUNS = 4


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with serve_folder(tmp_path) as base:
        yield base


def _read(location: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from stages import common; "
        "print(len(common.read_parquet(sys.argv[1])))"
    )
    env = quiet_env()
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, location],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_processes_reading_parquet_exit_cleanly(
    tmp_path: Path, served: str, figure
) -> None:
    frame = pd.DataFrame({"x": range(500), "y": [i % 2 for i in range(500)]})
    frame.to_parquet(tmp_path / "data.parquet")
    locations = ["data.parquet"] * LOCAL_RUNS + [f"{served}/data.parquet"] * URL_RUNS
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda where: _read(where, tmp_path), locations))
    failed = [
        f"{where}: exit {p.returncode}\n{p.stderr[-400:]}"
        for where, p in zip(locations, done, strict=True)
        if p.returncode != 0 or p.stdout.strip() != "500"
    ]
    assert not failed, "\n".join(failed)
    figure(
        "fault",
        "pyarrow's reader threads at interpreter exit (apache/arrow#34314)",
        f"{len(done)} of {len(done)} processes reading Parquet by path and URL exit 0",
    )


def test_a_url_of_another_scheme_is_read_through_fsspec() -> None:
    # s3://, gs:// and the like in practice; fsspec's in-memory store here, the
    # same code path (stages.common._url_bytes), with no network.
    import fsspec

    from stages import common

    frame = pd.DataFrame({"x": [1.5, 2.5, None], "y": ["a", "b", "c"]})
    url = "memory://mlops-tests/parquet-exit/data.parquet"
    with fsspec.open(url, "wb") as handle:
        frame.to_parquet(handle)
    try:
        pd.testing.assert_frame_equal(common.read_parquet(url), frame)
        with pytest.raises(FileNotFoundError):
            common.read_parquet("memory://mlops-tests/parquet-exit/missing.parquet")
    finally:
        fsspec.filesystem("memory").rm("/mlops-tests", recursive=True)
