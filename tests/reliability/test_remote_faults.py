"""An unreachable DVC remote fails the run, soon, and posts no report (issue 12, 9).

The remote is an HTTP one on 127.0.0.1 that refuses connections (nothing
listens), accepts and never answers, or answers 500 to everything. DVC alone
reads each of these as "the remote lacks the files": `dvc repro --pull` then
runs every stage again and exits 0, which on CI retrains and registers a new
model instead of restoring the pull request's run. `mlops run --pull` and
`mlops push` must exit non-zero within the remote's own timeouts (2 s here),
naming the remote and its URL, with the local cache untouched; and the
generated workflows must not write or post a report after that failure.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from runner import remotecheck
from runner.errors import RunError
from tests.reliability.conftest import free_port
from tests.support import ROOT, dvc, mlops, run

TIMEOUT_SECONDS = 2
# A run that fails on the remote's timeout, plus the CLI's start-up.
BOUND_SECONDS = 15
SPEC = """\
version: 1
project: {{name: remote-faults, task: regression, target: y}}
storage:
  remote: {{name: storage, url: "{url}"}}
pipeline:
  make:
    run: python -c "import pathlib; pathlib.Path('work').mkdir(exist_ok=True); pathlib.Path('work/a.txt').write_text('3')"
    outs: [work/a.txt]
  double:
    run: python -c "import pathlib; pathlib.Path('work/b.txt').write_text(str(2 * int(pathlib.Path('work/a.txt').read_text())))"
    needs: [make]
    outs: [work/b.txt]
"""


class _Fails(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = _fail


def _hang(listener: socket.socket, held: list[socket.socket]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed: the test is over
        held.append(conn)  # accepted, never read, never answered


@pytest.fixture(params=["refused", "hung", "answers 500"])
def remote_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a remote that fails in one of three ways."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}/remote"
    elif request.param == "hung":
        listener = socket.create_server(("127.0.0.1", 0))
        held: list[socket.socket] = []
        threading.Thread(target=_hang, args=(listener, held), daemon=True).start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/remote"
        listener.close()
        for conn in held:
            conn.close()
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Fails)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}/remote"
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with a local remote, pushed."""
    root = tmp_path_factory.mktemp("remote-faults") / "repo"
    root.mkdir(parents=True)
    (root / "mlops.yaml").write_text(SPEC.format(url=".mlops/dvc-remote"))
    run(["git", "init", "-q"], cwd=root)
    mlops("run", cwd=root)
    mlops("push", cwd=root)
    return root


def _cache(root: Path) -> dict[str, str]:
    base = root / ".dvc" / "cache"
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def _repo(baseline: Path, dest: Path, url: str) -> Path:
    """A copy of the baseline whose remote is ``url``, its outputs gone (a clone)."""
    root = dest / "repo"
    shutil.copytree(baseline, root, symlinks=True)
    (root / "mlops.yaml").write_text(SPEC.format(url=url))
    shutil.rmtree(root / "work")
    # As `mlops run` sets it up, with the HTTP timeouts a user would shorten.
    dvc("remote", "add", "--default", "--force", "storage", url, cwd=root)
    for key in ("read_timeout", "connect_timeout"):
        dvc("remote", "modify", "--local", "storage", key, str(TIMEOUT_SECONDS),
            cwd=root)  # fmt: skip
    return root


def _timed(*args: str, cwd: Path) -> tuple[float, str, str, int]:
    t0 = time.monotonic()
    proc = mlops(*args, cwd=cwd, check=False)
    return time.monotonic() - t0, proc.stdout, proc.stderr, proc.returncode


def _kind(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["remote_url"])


def test_run_pull_with_the_remote_down(
    baseline: Path,
    tmp_path: Path,
    remote_url: str,
    request: pytest.FixtureRequest,
    figure,
) -> None:
    root = _repo(baseline, tmp_path, remote_url)
    lock, cache = (root / "dvc.lock").read_bytes(), _cache(root)
    took, out, err, code = _timed("run", "--pull", cwd=root)
    assert code == 1, f"{out}\n{err}"
    assert took < BOUND_SECONDS, f"{took:.1f}s"
    assert f"the DVC remote 'storage' at {remote_url}" in err, err
    assert "running" not in out and "pulling" not in out, out
    assert not (root / "work").exists(), "outputs appeared: something ran"
    assert (root / "dvc.lock").read_bytes() == lock
    assert _cache(root) == cache
    # The report of this run (what CI posts next) is the failure, not the
    # baseline's last run, whose record and outputs are still here.
    mlops("report", "--output", "out", cwd=root)
    report = (root / "out" / "report.md").read_text()
    assert "❌ **The pipeline failed.**" in report, report
    assert f"the DVC remote 'storage' at {remote_url}" in report
    assert "- **Failed** before any stage ran" in report
    figure(
        "fault",
        f"the DVC remote {_kind(request)} during `mlops run --pull`",
        "exit 1 naming the remote and its URL before any stage ran or was "
        "pulled; dvc.lock and the local cache unchanged; the report says the "
        "run failed, and why",
        seconds=round(took, 1),
        timeout_seconds=TIMEOUT_SECONDS,
    )


def test_push_with_the_remote_down(
    baseline: Path,
    tmp_path: Path,
    remote_url: str,
    request: pytest.FixtureRequest,
    figure,
) -> None:
    root = _repo(baseline, tmp_path, remote_url)
    shutil.copytree(baseline / "work", root / "work")  # a finished run to push
    cache = _cache(root)
    took, out, err, code = _timed("push", cwd=root)
    assert code == 1, f"{out}\n{err}"
    assert took < BOUND_SECONDS, f"{took:.1f}s"
    assert f"the DVC remote 'storage' at {remote_url}" in err, err
    assert "pushed" not in out, out
    assert _cache(root) == cache
    figure(
        "fault",
        f"the DVC remote {_kind(request)} during `mlops push`",
        "exit 1 naming the remote and its URL; the local cache unchanged",
        seconds=round(took, 1),
        timeout_seconds=TIMEOUT_SECONDS,
    )


def test_the_probe_waits_as_long_as_dvc() -> None:
    from dvc_http import HTTPFileSystem

    assert remotecheck.DVC_HTTP_TIMEOUT == HTTPFileSystem.REQUEST_TIMEOUT


# GitHub runs a step whose `if:` has none of these only if every step before
# it succeeded (an implicit `success() &&`).
_STATUS = re.compile(r"\b(always|failure|cancelled)\s*\(")
_RUNS_PIPELINE = re.compile(r"(^|\s)mlops run\b")
# After a failed run, only the report runs (it then says the run failed, or
# did not run), and what shows it once it is written; never a push, a gate
# check or a deploy.
_AFTER_A_FAILED_RUN = {
    "Write the report": "!cancelled()",
    "Add the report to the job summary": (
        "!cancelled() && steps.report.outcome == 'success'"
    ),
    "Upload the report": "!cancelled() && steps.report.outcome == 'success'",
    "Comment the report on the pull request": (
        "!cancelled() && steps.report.outcome == 'success' && "
        "github.event.pull_request.head.repo.full_name == github.repository"
    ),
}


def _workflows() -> list[Path]:
    folders = [ROOT / ".github" / "workflows"]
    folders += sorted((ROOT / "tests" / "golden").glob("*/.github/workflows"))
    folders += sorted((ROOT / "examples").glob("*/.github/workflows"))
    return [p for folder in folders for p in sorted(folder.glob("*.yml"))]


def test_after_a_failed_run_only_its_report_runs(figure) -> None:
    checked, reported = [], []
    for path in _workflows():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, job in doc["jobs"].items():
            steps = job.get("steps", [])
            at = next(
                (
                    i
                    for i, s in enumerate(steps)
                    if _RUNS_PIPELINE.search(s.get("run", ""))
                ),
                None,
            )
            if at is None:
                continue
            for step in steps[at + 1 :]:
                when = str(step.get("if", ""))
                checked.append((path, step["name"]))
                if not _STATUS.search(when):
                    continue  # skipped once a step before it failed
                assert when == _AFTER_A_FAILED_RUN.get(step["name"]), (
                    f"{path.relative_to(ROOT)}: job {name}, step {step['name']!r} "
                    f"runs after a failed `mlops run` (if: {when})"
                )
                reported.append((path, step["name"]))
    pull_requests = {p for p, _ in reported}
    assert pull_requests == {
        p for p in _workflows() if p.name == "mlops-pull-request.yml"
    }, pull_requests
    assert len(reported) == len(_AFTER_A_FAILED_RUN) * len(pull_requests)
    figure(
        "fault",
        "a failed `mlops run --pull` in every generated workflow",
        "only the report (which then says the run failed) and the steps that "
        "show it run after it; no push, gate check, promotion or deploy",
        workflows=len({p for p, _ in checked}),
        steps=len(checked),
    )


def test_the_error_names_the_url_without_its_password(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n"
        f"    url = http://team:s3cret@127.0.0.1:{port}/remote\n"
    )
    with pytest.raises(RunError) as caught:
        remotecheck.check(tmp_path)
    assert f"'storage' at http://127.0.0.1:{port}/remote could not be reached" in (
        str(caught.value)
    )
    assert "s3cret" not in str(caught.value) and "team" not in str(caught.value)


@pytest.mark.parametrize("status", [200, 401, 403, 404])
def test_a_remote_that_answers_passes_the_check(tmp_path: Path, status: int) -> None:
    """Any answer below 500 is a live server: DVC asks for files, not the folder."""

    class Answers(_Fails):
        def _fail(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _fail

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / ".dvc").mkdir()
        (tmp_path / ".dvc" / "config").write_text(
            "[core]\n    remote = storage\n['remote \"storage\"']\n"
            f"    url = http://127.0.0.1:{server.server_address[1]}/remote\n"
        )
        (tmp_path / ".dvc" / "config.local").write_text(
            "['remote \"storage\"']\n    read_timeout = 2\n"
        )
        remote = remotecheck.default_remote(tmp_path)
        assert remote is not None and remote.timeout == remotecheck.DVC_HTTP_TIMEOUT
        remotecheck.check(tmp_path)
    finally:
        server.shutdown()
        server.server_close()
