"""No secret value leaks into anything the framework writes (issue 12, item 15).

Known secret values go into the environment of every command (AWS keys as a
DVC remote would read them, MLflow's token and password, a GitHub token) and
into a ``dvc remote modify --local`` credential. Then the bundled example is
run cold, pushed, reported, promoted, its history listed, and served with real
requests and a read of /metrics. Every output is then searched for each value,
raw and in base64: every file of the repository (git's objects decompressed,
zip and Parquet files opened), the MLflow store (the SQLite file and its dump),
HOME and TMPDIR of the commands, stdout and stderr of each command, and every
HTTP answer. The one place a value may be is the file the user put it in
(``.dvc/config.local``), and the search must find it there.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, example_env, run, store_of

MODEL = "cancer-classifier"
READY_SECONDS = 90
BACKUP_REMOTE = "backup"  # an S3 remote whose credentials are --local


def _secret(name: str) -> str:
    return f"{name}-{secrets.token_hex(12)}"


SECRETS = {
    "AWS_ACCESS_KEY_ID": _secret("AKIAleak"),
    "AWS_SECRET_ACCESS_KEY": _secret("awssecretleak"),
    "AWS_SESSION_TOKEN": _secret("awssessionleak"),
    "MLFLOW_TRACKING_TOKEN": _secret("mlflowtokenleak"),
    "MLFLOW_TRACKING_PASSWORD": _secret("mlflowpassleak"),
    "GITHUB_TOKEN": _secret("ghp_leak"),
    "GH_TOKEN": _secret("ghp_leak2"),
}
# Set too, but not secret: MLflow records the tracking user as a run's
# `mlflow.user` tag, by design. Searched for only inside basic auth's base64.
USERNAME = _secret("mlflowuser")
# Given to DVC only through `dvc remote modify --local`.
LOCAL_CREDENTIALS = {
    "access_key_id": _secret("dvclocalkeyleak"),
    "secret_access_key": _secret("dvclocalsecretleak"),
}


def _base64_forms(value: bytes) -> Iterator[tuple[str, bytes]]:
    """The part of value's base64 that is the same wherever value starts in the
    encoded stream: one form per alignment (0, 1 or 2 bytes before it), in the
    standard and the URL alphabet."""
    for before in range(3):
        stream = b"\0" * before + value
        first = -(-4 * before // 3)  # the first character made of value's bits only
        last = 8 * len(stream) // 6  # past the last one
        for alphabet, encode in (("base64", base64.b64encode),
                                 ("base64url", base64.urlsafe_b64encode)):  # fmt: skip
            yield f"{alphabet}, offset {before}", encode(stream)[first:last]


def needles() -> dict[str, bytes]:
    """What to search for: each value raw and in base64 (any alignment, both
    alphabets), and HTTP basic auth's ``user:password`` in base64."""
    values = {
        **SECRETS,
        **{f"dvc --local {k}": v for k, v in LOCAL_CREDENTIALS.items()},
    }
    values["MLflow basic auth"] = f"{USERNAME}:{SECRETS['MLFLOW_TRACKING_PASSWORD']}"
    found = {}
    for name, value in values.items():
        found[name] = value.encode()
        for form, encoded in _base64_forms(value.encode()):
            found[f"{name} ({form})"] = encoded
    return found


@dataclass
class Outputs:
    """Everything the commands produced, by where it came from."""

    root: Path
    home: Path
    tmp: Path
    texts: dict[str, bytes] = field(default_factory=dict)  # stdout, stderr, HTTP

    def add(self, name: str, data: str | bytes) -> None:
        self.texts[name] = data.encode() if isinstance(data, str) else data


def _env(home: Path, tmp: Path) -> dict[str, str]:
    env = example_env()
    env.update(SECRETS)
    env["MLFLOW_TRACKING_USERNAME"] = USERNAME
    env.update(
        {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache")}
    )
    return env


def _step(out: Outputs, name: str, args: list[str], env: dict[str, str]) -> str:
    proc = run(args, cwd=out.root, env=env)
    out.add(f"{name}: stdout", proc.stdout)
    out.add(f"{name}: stderr", proc.stderr)
    return proc.stdout


def _mlops(out: Outputs, env: dict[str, str], *args: str) -> str:
    return _step(
        out, f"mlops {' '.join(args)}", [sys.executable, "-m", "runner.cli", *args], env
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        head = "".join(f"{k}: {v}\n" for k, v in r.getheaders()).encode()
        return r.status, head + r.read()
    finally:
        conn.close()


def _serve(out: Outputs, env: dict[str, str]) -> None:
    """`mlops serve`, real requests, /metrics; its output is kept."""
    from stages import common

    port = _free_port()
    log = out.tmp / "serve.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "serve", "--port", str(port)],
            cwd=out.root, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _http(port, "GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        test = common.read_parquet(out.root / "artifacts/preprocess/test.parquet")
        rows = test.drop(columns=["target"]).head(5)
        split = json.loads(rows.to_json(orient="split", index=False))
        body = json.dumps({"dataframe_split": split}).encode()
        for i in range(5):
            status, answer = _http(port, "POST", "/invocations", body)
            assert status == 200, answer
            out.add(f"POST /invocations {i}", answer)
        status, answer = _http(port, "POST", "/invocations", b'{"nope": 1}')
        assert status == 400
        out.add("POST /invocations (bad)", answer)
        for path in ("/metrics", "/version", "/health", "/ready", "/nowhere"):
            out.add(f"GET {path}", _http(port, "GET", path)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out.add("mlops serve: output", log.read_bytes())


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """The example run cold and taken through every command, secrets set."""
    base = tmp_path_factory.mktemp("secrets")
    out = Outputs(base / "repo", base / "home", base / "tmp")
    for folder in (out.root, out.home, out.tmp):
        folder.mkdir()
    env = _env(out.home, out.tmp)
    shutil.copytree(ROOT / "stages", out.root / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "mlops.yaml", out.root / "mlops.yaml")
    _step(out, "git init", ["git", "init", "-q", "-b", "main"], env)
    _step(out, "git add", ["git", "add", "mlops.yaml", "stages"], env)
    _step(out, "git commit", ["git", "commit", "-qm", "example"], env)
    dvc = [sys.executable, "-m", "dvc"]
    _step(out, "dvc init", [*dvc, "init", "-q"], env)
    _step(out, "dvc remote add", [*dvc, "remote", "add", BACKUP_REMOTE,
                                  "s3://mlops-secrets-test/store"], env)  # fmt: skip
    for key, value in LOCAL_CREDENTIALS.items():
        _step(out, f"dvc remote modify --local {key}",
              [*dvc, "remote", "modify", "--local", BACKUP_REMOTE, key, value], env)  # fmt: skip
    _mlops(out, env, "run")
    _mlops(out, env, "push")
    _mlops(out, env, "gates")
    _mlops(out, env, "report")
    _mlops(out, env, "promote")
    _mlops(out, env, "history")
    _mlops(out, env, "history", "--json")
    _serve(out, env)
    return out


# --- the search ---


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """A file's bytes, and what compressed formats hold inside it."""
    data = path.read_bytes()
    yield str(path), data
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.namelist():
                yield f"{path}!{member}", z.read(member)
    elif data[:2] == b"\x1f\x8b":
        yield f"{path} (gunzipped)", gzip.decompress(data)
    elif data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield f"{path} (Parquet)", str(table.schema.metadata).encode()
        yield f"{path} (Parquet rows)", table.to_pandas().to_csv().encode()
    elif data[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            yield f"{path} (SQL dump)", "\n".join(db.iterdump()).encode()


def _git_objects(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every object of the repository's git store, decompressed."""
    proc = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=root, capture_output=True, check=True,
    )  # fmt: skip
    yield f"{root}/.git (all objects)", proc.stdout


def search(
    sources: Iterator[tuple[str, bytes]],
) -> tuple[dict[str, list[str]], int, int]:
    """Where each needle occurs; how many sources and bytes were searched."""
    wanted = needles()
    hits: dict[str, list[str]] = {}
    count = size = 0
    for where, data in sources:
        count += 1
        size += len(data)
        for name, needle in wanted.items():
            if needle in data:
                hits.setdefault(where, []).append(name)
    return hits, count, size


def _every_output(out: Outputs) -> Iterator[tuple[str, bytes]]:
    for folder in (out.root, out.home, out.tmp):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield from _contents(path)
    yield from _git_objects(out.root)
    yield from out.texts.items()


def test_the_search_finds_a_planted_value(tmp_path: Path) -> None:
    """The search itself: raw, base64, zipped, gzipped and in SQLite."""
    value = SECRETS["MLFLOW_TRACKING_TOKEN"].encode()
    (tmp_path / "raw.txt").write_bytes(b"x" + value + b"y")
    (tmp_path / "b64.txt").write_bytes(base64.b64encode(b"Bearer " + value))
    with zipfile.ZipFile(tmp_path / "model.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.json", json.dumps({"token": value.decode()}) * 50)
    (tmp_path / "log.gz").write_bytes(gzip.compress(value * 10))
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("create table params (value text)")
        db.execute("insert into params values (?)", (value.decode(),))
    hits, _, _ = search(
        item for p in sorted(tmp_path.iterdir()) for item in _contents(p)
    )
    found = {Path(where.split("!")[0].split(" (")[0]).name for where in hits}
    assert found == {"raw.txt", "b64.txt", "model.zip", "log.gz", "store.db"}, hits
    for offset in range(3):  # base64 of the value after 0, 1 or 2 other bytes
        encoded = base64.b64encode(b"x" * offset + value)
        assert search(iter([("x", encoded)]))[0], offset


def _named(sources: Iterator[tuple[str, bytes]], names: list[str]) -> Iterator:
    for where, data in sources:
        names.append(where)
        yield where, data


# What the search must have read (relative to the repository), to count.
MUST_SEARCH = {
    "the audit log": "promotions.jsonl",
    "the prediction log": ".mlops/predictions/",
    "the report": ".mlops/report/report.md",
    "the MLflow store": ".mlops/mlflow.db (SQL dump)",
    "git's objects": ".git (all objects)",
    "a generated workflow": ".github/workflows/",
    "dvc.lock": "dvc.lock",
}


def test_no_secret_reaches_any_output(figure: Any, outputs: Outputs) -> None:
    names: list[str] = []
    hits, sources, size = search(_named(_every_output(outputs), names))
    for what, part in MUST_SEARCH.items():
        assert any(part in name for name in names), f"{what} ({part}) not searched"
    where_put = str(outputs.root / ".dvc" / "config.local")
    # Found where the user wrote them, so the search does reach them.
    assert set(hits.pop(where_put, [])) >= set(
        f"dvc --local {k}" for k in LOCAL_CREDENTIALS
    ), "the --local credentials are not in .dvc/config.local"
    assert not hits, "secret values found:\n" + "\n".join(
        f"{where}: {', '.join(names)}" for where, names in sorted(hits.items())
    )
    # The store was searched, and read: the tracking user is MLflow's `mlflow.user`.
    store = store_of(outputs.root)
    assert USERNAME.encode() in dict(_contents(store))[f"{store} (SQL dump)"]
    commands = sorted({name.split(":")[0] for name in outputs.texts})
    figure(
        "security",
        f"{len(SECRETS)} secret values in the environment (AWS keys, MLflow token "
        "and password, GitHub tokens) and 2 DVC `--local` credentials, through "
        "run, push, gates, report, promote, history and serve (requests and "
        "/metrics)",
        "no value, raw or base64, in any file (git objects, MLflow store, "
        "prediction log, report, audit log, HOME, TMPDIR), command output or "
        "HTTP answer; found only in .dvc/config.local",
        sources_searched=sources,
        mb_searched=round(size / 1e6, 1),
        outputs_of=len(commands),
    )
