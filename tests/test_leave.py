"""`stages.run_then_leave`: how every stage process and the warm server end.

Each case is a real interpreter: what it prints, its exit code and its atexit
handlers must be what ``raise SystemExit(main())`` gives; only the teardown
after them is skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """\
import atexit, sys
from stages import run_then_leave
atexit.register(lambda: print("atexit ran", flush=False))
def main():
    sys.stdout.write("buffered, not flushed\\n")
    {body}
run_then_leave(main)
"""


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.format(body=body)], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "code", "stderr"),
    [
        ("return 0", 0, ""),
        ("return None", 0, ""),
        ("return 3", 3, ""),
        ("raise SystemExit(4)", 4, ""),
        ("raise SystemExit('a message')", 1, "a message\n"),
        ("raise ValueError('broken')", 1, "ValueError: broken"),
        ("raise KeyboardInterrupt", 130, ""),
        ("return 256 + 7", 7, ""),
    ],
)
def test_exit_codes_and_output_are_what_python_gives(
    body: str, code: int, stderr: str, tmp_path: Path
) -> None:
    proc = _run(body, tmp_path)
    assert proc.returncode == code, proc.stderr
    # Nothing buffered is lost, and atexit handlers run (and are flushed) too.
    assert proc.stdout == "buffered, not flushed\natexit ran\n"
    if stderr.endswith("\n"):
        assert proc.stderr == stderr
    elif stderr:
        assert "Traceback (most recent call last)" in proc.stderr
        assert proc.stderr.rstrip().endswith(stderr)
    else:
        assert proc.stderr == ""


def test_a_closed_stdout_still_exits_with_mains_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(body="sys.stdout.close(); return 5")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr


NOISY = """\
import sys
from stages import run_then_leave


class Noisy:
    def __del__(self):
        sys.stdout.write("torn down\\n")
        sys.stdout.flush()


KEPT = Noisy()  # freed only if the interpreter tears down its modules
run_then_leave(lambda: 6)
"""


def test_run_by_python_it_skips_the_teardown(tmp_path: Path) -> None:
    (tmp_path / "leaver.py").write_text(NOISY)
    proc = subprocess.run(
        [sys.executable, "-m", "leaver"], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    assert "torn down" not in proc.stdout


def test_run_by_a_profiler_it_returns_so_the_profiler_reports(tmp_path: Path) -> None:
    (tmp_path / "leaver.py").write_text(NOISY)
    proc = subprocess.run(
        [sys.executable, "-m", "cProfile", "-m", "leaver"], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # cProfile swallows SystemExit, as it would `raise SystemExit(6)`'s.
    assert proc.returncode == 0, proc.stderr
    assert "function calls" in proc.stdout  # its report, printed once we returned


THREADS = """\
import concurrent.futures, sys, threading, time
from stages import run_then_leave


def late(text):
    time.sleep(0.3)
    sys.stdout.write(text)


def main():
    threading.Thread(target=late, args=("thread done\\n",)).start()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.submit(late, "pool task done\\n")  # never waited for, nor shut down
    return 0


run_then_leave(main)
"""


def test_it_waits_for_threads_and_pools_as_python_does(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", THREADS], cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["pool task done", "thread done"]


def test_a_batch_process_collects_rarely_and_a_server_as_python_does() -> None:
    """stages.batch_gc for stage processes; stages.serving_gc once a server has
    loaded what it serves (a fresh interpreter: Python's default thresholds)."""
    import stages

    program = (
        "import gc, stages\n"
        "default = gc.get_threshold()\n"
        "stages.batch_gc()\n"
        "batch = gc.get_threshold()\n"
        "stages.serving_gc()\n"
        "print(default, batch, gc.get_threshold(), gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    limit = stages.BATCH_GC_THRESHOLD
    assert out == f"(700, 10, 10) ({limit}, 10, 10) (700, 10, 10) True\n"
