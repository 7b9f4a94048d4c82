"""`mlops serve` for real: the example's model in a real MLflow SQLite store,
real servers on 127.0.0.1, plain HTTP clients.

One temp repository per module, a copy of the session's run of the example
(tests/conftest.py), whose version is promoted. This file then converts that
model to ONNX itself (the call the register stage makes), logs it in the
version's run and sets the version's ONNX tags, so each server below serves
a known case: the sklearn fallback (no tag), ONNX (verified), the fallback
again (sha256 mismatch).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stages import common, modelfile
from stages.register import TAG_ONNX, TAG_ONNX_DETAIL, TAG_ONNX_SHA256
from stages.serving import inputs
from tests.conftest import ExampleRun
from tests.support import quiet_env, run

MODEL = "cancer-classifier"
READY_SECONDS = 60


@dataclass
class Server:
    """A running server: its process, port, and where it logs."""

    proc: subprocess.Popen[str]
    port: int
    log_dir: Path
    output: Path

    def worker_pids(self) -> set[int]:
        """The pids of the processes that loaded the model, from their lines."""
        found = re.findall(r"ready in [0-9.]+s, process (\d+)", self.output.read_text())
        return {int(pid) for pid in found}

    def wait_for_workers(self, count: int, seconds: float = 60) -> set[int]:
        """The workers' pids once ``count`` have loaded: /ready answered when the
        first one had, and on a loaded machine the others may still be loading."""
        deadline = time.monotonic() + seconds
        while len(found := self.worker_pids()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return found

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def post(
        self, body: bytes, kind: str = "application/json", **headers: str
    ) -> tuple[int, Any]:
        status, got, data = self.request(
            "POST", "/invocations", body, {"Content-Type": kind, **headers}
        )
        assert got.get("content-type") == "application/json", (status, data)
        return status, json.loads(data)

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, data = self.request("GET", path)
        return status, data

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(repo: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{repo}/.mlops/mlflow.db")


def _start(repo: Path, tmp: Path, *flags: str, cli: bool = False) -> Server:
    """``mlops serve`` (cli) or ``python -m stages.serving`` with explicit flags."""
    port = _free_port()
    log_dir = tmp / f"predictions-{port}"
    if cli:
        args = [sys.executable, "-m", "runner.cli", "serve", "--port", str(port),
                "--prediction-log", str(log_dir), *flags]  # fmt: skip
    else:
        settings = {
            "--host": "127.0.0.1", "--port": str(port), "--workers": "1",
            "--max-request-bytes": "1048576", "--log-dir": str(log_dir),
            "--log-sample": "1", "--log-max-bytes": "1048576", "--log-backups": "3",
        }  # fmt: skip
        for key, value in zip(flags[::2], flags[1::2], strict=True):
            settings[key] = value
        args = [sys.executable, "-m", "stages.serving"]
        args += [item for pair in settings.items() for item in pair]
    output = tmp / f"server-{port}.log"
    out = open(output, "w+", encoding="utf-8")
    proc = subprocess.Popen(
        args, cwd=repo, env=quiet_env(), stdout=out, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    server = Server(proc, port, log_dir, output)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out.seek(0)
            raise AssertionError(f"server exited {proc.returncode}:\n{out.read()}")
        try:
            if server.get("/ready")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    out.seek(0)
    raise AssertionError(f"server not ready in {READY_SECONDS}s:\n{out.read()}")


def _set_onnx(repo: Path, tags: dict[str, str | None]) -> None:
    client = _client(repo)
    for key, value in tags.items():
        if value is None:
            if key in (client.get_model_version(MODEL, "1").tags or {}):
                client.delete_model_version_tag(MODEL, "1", key)
        else:
            client.set_model_version_tag(MODEL, "1", key, value)


def _convert(model: Any, columns: list[str]) -> bytes:
    """The register stage's conversion: one float input per column, no ZipMap."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[(c, FloatTensorType([None, 1])) for c in columns],
        target_opset={"": 18, "ai.onnx.ml": 3},
        options={id(model.steps[-1][1]): {"zipmap": False}},
        name="mlops",
    )
    return bytes(onx.SerializeToString())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, example_run: ExampleRun) -> Path:
    """The example, run and promoted: version 1 is @production."""
    root = example_run.copy(tmp_path_factory.mktemp("serve") / "repo")
    # What `mlops promote` would do (tested in test_promote), without its scoring.
    _client(root).set_registered_model_alias(MODEL, "production", "1")
    return root


@pytest.fixture(scope="module")
def model(repo: Path) -> Any:
    params = common.load_params(repo / "params.yaml")
    return modelfile.load_model_dir(
        repo / "artifacts/train/model", common.project_allow(params)
    )


@pytest.fixture(scope="module")
def rows(repo: Path) -> Any:
    test = common.read_parquet(repo / "artifacts/preprocess/test.parquet")
    return test.drop(columns=["target"]).head(20)


@pytest.fixture(scope="module")
def onnx_sha(
    repo: Path, model: Any, rows: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Our own conversion, logged where the register stage logs it."""
    data = _convert(model, list(rows.columns))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(data)
    client = _client(repo)
    run_id = client.get_model_version(MODEL, "1").run_id
    client.log_artifact(run_id, str(path), "onnx")
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sk_server(
    repo: Path, onnx_sha: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``mlops serve`` on version 1 without an ONNX tag: the sklearn fallback."""
    _set_onnx(repo, {TAG_ONNX: None, TAG_ONNX_SHA256: None})
    server = _start(repo, tmp_path_factory.mktemp("sk"), cli=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def onnx_server(
    repo: Path,
    onnx_sha: str,
    sk_server: Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """Verified ONNX with two workers (prometheus multiprocess mode)."""
    _set_onnx(repo, {TAG_ONNX: "verified", TAG_ONNX_SHA256: onnx_sha,
                     TAG_ONNX_DETAIL: "checked by tests"})  # fmt: skip
    server = _start(repo, tmp_path_factory.mktemp("onnx"), "--workers", "2", cli=True)
    yield server
    server.stop()


def _split(frame: Any) -> bytes:
    split = json.loads(frame.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def _bodies(frame: Any) -> dict[str, tuple[bytes, str]]:
    records = json.loads(frame.to_json(orient="records"))
    return {
        "dataframe_split": (_split(frame), "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": records}).encode(),
                              "application/json"),
        "instances": (json.dumps({"instances": records}).encode(), "application/json"),
        "inputs": (json.dumps({"inputs": frame.to_dict(orient="list")}).encode(),
                   "application/json; charset=utf-8"),
        "csv": (frame.to_csv(index=False).encode(), "text/csv"),
    }  # fmt: skip


def _family(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _metric(server: Server, name: str, **labels: str) -> float:
    status, body = server.get("/metrics")
    assert status == 200, body
    text = body.decode()
    return sum(
        v for k, v in _family(text, name).items() if set(labels.items()) <= set(k)
    )


def _counted(server: Server, name: str, want: float, **labels: str) -> float:
    """The metric once it reaches ``want``, or what it is after 10 s: a worker
    counts a request just after answering it, so a read right after the last
    answer (by the other worker, say) may not see it yet."""
    deadline = time.monotonic() + 10
    while (got := _metric(server, name, **labels)) < want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return got


@pytest.mark.parametrize(
    "fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"]
)
def test_each_mlflow_format_answers_the_models_predictions(
    sk_server: Server, model: Any, rows: Any, fmt: str
) -> None:
    body, kind = _bodies(rows)[fmt]
    status, answer = sk_server.post(body, kind)
    assert status == 200, answer
    assert answer == {"predictions": [int(p) for p in model.predict(rows)]}
    assert all(type(p) is int for p in answer["predictions"])


def test_columns_the_model_does_not_take_are_ignored_as_mlflow_does(
    sk_server: Server, model: Any, rows: Any
) -> None:
    # A client that sends the whole record, its identifier (which preprocess
    # drops) included, gets the model's answer, in every format.
    wider = rows.head(5).copy()
    wider.insert(0, "patient id", [f"P-{i}" for i in range(len(wider))])
    wider["note"] = [None, "x", 3, True, 1.5][: len(wider)]
    expected = [int(p) for p in model.predict(rows.head(5))]
    for fmt, (body, kind) in _bodies(wider).items():
        status, answer = sk_server.post(body, kind)
        assert status == 200, (fmt, answer)
        assert answer == {"predictions": expected}, fmt


def _bad_requests(rows: Any) -> list[tuple[str, bytes, str, str]]:
    one = rows.head(1)
    records = json.loads(one.to_json(orient="records"))
    missing = [{k: v for k, v in records[0].items() if k != "mean area"}]
    unknown = [{**records[0], "colour": 3}]
    split = json.loads(one.to_json(orient="split", index=False))
    wrong = json.loads(json.dumps(split))
    wrong["data"][0][3] = "large"
    csv_bad = one.to_csv(index=False).replace("mean texture", "mean textur", 1)
    infinite = json.loads(json.dumps(split))
    infinite["data"][0][0] = math.inf  # JSON's Infinity, which MLflow reads too
    huge = json.loads(json.dumps(split))
    huge["data"][0][0] = 1e300  # finite, but past float32, which the forest uses
    return [
        ("missing column", json.dumps({"dataframe_records": missing}).encode(),
         "application/json", "missing column(s) 'mean area'"),
        ("missing and unknown column",
         json.dumps({"dataframe_records": [
             {k: v for k, v in unknown[0].items() if k != "mean area"}]}).encode(),
         "application/json",
         "missing column(s) 'mean area'; the model does not take 'colour'"),
        ("wrong type", json.dumps({"dataframe_split": wrong}).encode(),
         "application/json",
         "column 'mean area' (double), row 0: expected a number, got a string"),
        ("malformed JSON", b'{"dataframe_split": {"columns": ["a"],, }}',
         "application/json", "not valid JSON"),
        ("truncated body", _split(one)[:-20], "application/json", "not valid JSON"),
        ("non-UTF-8", b'{"dataframe_split": "\xff\xfe"}', "application/json",
         "not UTF-8"),
        ("CSV bad header", csv_bad.encode(), "text/csv",
         "CSV header: missing column(s) 'mean texture'; the model does not take "
         "'mean textur'"),
        ("wrong content type", _split(one), "text/plain", "Content-Type must be"),
        ("empty data", json.dumps({"dataframe_split": {"columns": split["columns"],
         "data": []}}).encode(), "application/json", "no rows"),
        ("no format key", b'{"rows": []}', "application/json", "exactly one of"),
        ("not UTF-8 charset", _split(one), "application/json; charset=latin-1",
         "only UTF-8"),
        ("infinite value", json.dumps({"dataframe_split": infinite}).encode(),
         "application/json",
         "column 'mean radius' (double), row 0: expected a finite number, got inf"),
        ("infinite CSV value", one.to_csv(index=False).replace(
            str(one.iloc[0, 0]), "inf", 1).encode(), "text/csv",
         "column 'mean radius' (double), row 0: expected a finite number, got inf"),
        # Finite, but infinity in float32: refused by the server, not by the
        # pipeline (which says "Input X contains infinity"), on either path.
        ("too large a value", json.dumps({"dataframe_split": huge}).encode(),
         "application/json",
         "column 'mean radius' (double), row 0: expected a finite number, got "
         "1e+300, beyond what the model computes in (float32, at most "
         "3.40282e+38 either side of 0)"),
    ]  # fmt: skip


def test_bad_requests_are_400_naming_the_problem_never_500(
    sk_server: Server, rows: Any
) -> None:
    before = _metric(sk_server, "mlops_request_errors_total", status="400")
    cases = _bad_requests(rows)
    for name, body, kind, expected in cases:
        status, answer = sk_server.post(body, kind)
        assert status == 400, (name, answer)
        assert answer["error_code"] == "BAD_REQUEST", name
        assert expected in answer["message"], (name, answer["message"])
    after = _metric(sk_server, "mlops_request_errors_total", status="400")
    assert after - before == len(cases)


def test_a_body_over_the_limit_is_413_by_length_and_while_streaming(
    sk_server: Server, rows: Any
) -> None:
    big = b" " * (1024 * 1024) + _split(rows.head(1))
    status, answer = sk_server.post(big)
    assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE"
    assert "1048576" in answer["message"]
    # No Content-Length: chunks are counted as they arrive.
    conn = http.client.HTTPConnection("127.0.0.1", sk_server.port, timeout=30)
    chunks = (b" " * 65536 for _ in range(20))
    conn.request("POST", "/invocations", body=chunks,
                 headers={"Content-Type": "application/json"}, encode_chunked=True)  # fmt: skip
    r = conn.getresponse()
    assert r.status == 413 and b"over the limit" in r.read()
    conn.close()
    assert sk_server.post(_split(rows.head(1)))[0] == 200  # still serving


def test_health_ready_version_and_request_ids(
    sk_server: Server, repo: Path, rows: Any
) -> None:
    assert sk_server.get("/health") == (200, b'{"status": "ok"}')
    assert sk_server.get("/ping")[0] == 200
    assert sk_server.get("/ready") == (200, b'{"status": "ready"}')
    version = json.loads(sk_server.get("/version")[1])
    registered = _client(repo).get_model_version(MODEL, "1")
    assert version["model"] == MODEL and version["version"] == "1"
    assert version["run_id"] == registered.run_id
    head = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    assert version["git_commit"] == head
    assert version["data_md5"] == registered.tags[common.TAG_DATA_HASH]
    assert version["predictor"] == "sklearn"
    assert (
        version["onnx"]["served"] is False
        and "no mlops.onnx tag" in version["onnx"]["why"]
    )
    assert version["signature"][0] == {"name": "mean radius", "type": "double"}
    _, headers, _ = sk_server.request(
        "POST", "/invocations", _split(rows.head(1)),
        {"Content-Type": "application/json", "X-Request-ID": "abc-123"},
    )  # fmt: skip
    assert headers["x-request-id"] == "abc-123"
    _, headers, _ = sk_server.request(
        "POST",
        "/invocations",
        _split(rows.head(1)),
        {"Content-Type": "application/json"},
    )
    assert len(headers["x-request-id"]) == 32  # a fresh uuid4 hex
    assert sk_server.get("/nowhere")[0] == 404


def test_metrics_count_requests_errors_latency_and_classes(
    sk_server: Server, rows: Any, model: Any
) -> None:
    def snapshot() -> dict[str, float]:
        return {
            "ok": _metric(sk_server, "mlops_requests_total", status="200",
                          model_version="1"),
            "bad": _metric(sk_server, "mlops_requests_total", status="400"),
            "latency": _metric(sk_server, "mlops_request_duration_seconds_count"),
            "class0": _metric(sk_server, "mlops_predictions_total", **{"class": "0"}),
            "class1": _metric(sk_server, "mlops_predictions_total", **{"class": "1"}),
        }  # fmt: skip

    before = snapshot()
    for _ in range(3):
        assert sk_server.post(_split(rows))[0] == 200
    assert sk_server.post(b"{", "application/json")[0] == 400
    after = snapshot()
    predicted = [int(p) for p in model.predict(rows)]
    assert after["ok"] - before["ok"] == 3
    assert after["bad"] - before["bad"] == 1
    assert after["latency"] - before["latency"] == 4
    assert after["class0"] - before["class0"] == 3 * predicted.count(0)
    assert after["class1"] - before["class1"] == 3 * predicted.count(1)
    info = _metric(
        sk_server, "mlops_model_info", predictor="sklearn", model_version="1"
    )
    assert info == 1


# Two workers' metric files as prometheus-client's multiprocess mode leaves
# them: one worker's, written, and one just created by a worker still starting
# (or killed while it started), empty until MmapedDict sizes it.
_WORKERS = """
import os, struct, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from stages.serving.metrics import Metrics
m = Metrics("cancer-classifier", "7", classifier=True)
m.loaded("onnx", "run-1")
m.answered(200, 0.003, None)
m.answered(400, 0.001, "BAD_REQUEST")
m.predicted([0, 1, 1])
open(os.path.join(sys.argv[1], "counter_999999.db"), "wb").close()
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
upstream = CollectorRegistry()
multiprocess.MultiProcessCollector(upstream)
try:
    generate_latest(upstream)
except struct.error:
    print("upstream: struct.error", file=sys.stderr)
sys.stdout.write(m.exposition()[0].decode())
"""


def test_metrics_leave_out_a_workers_file_that_is_not_sized_yet(
    tmp_path: Path,
) -> None:
    proc = run([sys.executable, "-c", _WORKERS, str(tmp_path)], cwd=tmp_path)
    # prometheus-client's own collector fails on the empty file...
    assert "upstream: struct.error" in proc.stderr
    # ...ours answers with everything the written file holds.
    families = {
        name: _family(proc.stdout, name)
        for name in ("mlops_requests_total", "mlops_predictions_total",
                     "mlops_model_info", "mlops_request_duration_seconds_count")
    }  # fmt: skip
    version = ("model_version", "7")
    assert families["mlops_requests_total"] == {
        (version, ("status", "200")): 1.0,
        (version, ("status", "400")): 1.0,
    }
    assert families["mlops_predictions_total"] == {
        (("class", "0"), version): 1.0,
        (("class", "1"), version): 2.0,
    }
    assert families["mlops_request_duration_seconds_count"] == {(version,): 2.0}
    assert list(families["mlops_model_info"].values()) == [1.0]


def _log_lines(folder: Path, want: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        files = sorted(folder.glob("predictions-*.jsonl*")) if folder.is_dir() else []
        lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
        if len(lines) >= want:
            break
        time.sleep(0.1)
    return lines


def test_the_prediction_log_has_one_line_per_request(
    sk_server: Server, rows: Any, model: Any
) -> None:
    two = rows.head(2)
    status, answer = sk_server.post(_split(two), **{"X-Request-ID": "log-me"})
    assert status == 200
    found = [e for e in _log_lines(sk_server.log_dir, 1) if e["request_id"] == "log-me"]
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = [
            e for e in _log_lines(sk_server.log_dir) if e["request_id"] == "log-me"
        ]
    [entry] = found
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert (entry["model"], entry["model_version"]) == (MODEL, "1")
    assert entry["predictor"] == "sklearn"
    assert entry["inputs"] == json.loads(two.to_json(orient="records"))
    assert entry["outputs"] == answer["predictions"]
    [name] = {p.name for p in sk_server.log_dir.glob("predictions-*.jsonl")}
    [pid] = sk_server.worker_pids()
    assert name == f"predictions-{socket.gethostname()}-{pid}.jsonl"


def test_onnx_serves_a_verified_conversion_with_the_models_answers(
    onnx_server: Server, model: Any, rows: Any
) -> None:
    version = json.loads(onnx_server.get("/version")[1])
    assert version["predictor"] == "onnx" and version["onnx"]["served"] is True
    expected = [int(p) for p in model.predict(rows)]
    for fmt, (body, kind) in _bodies(rows).items():
        status, answer = onnx_server.post(body, kind)
        assert status == 200, (fmt, answer)
        assert answer["predictions"] == expected, fmt
        assert all(type(p) is int for p in answer["predictions"])
    # Two workers, one count: /metrics adds up every worker's files.
    total = "mlops_requests_total"
    before = _counted(onnx_server, total, len(_bodies(rows)), status="200")
    for _ in range(10):
        assert onnx_server.post(_split(rows.head(1)))[0] == 200
    assert _counted(onnx_server, total, before + 10, status="200") - before == 10
    assert _metric(onnx_server, "mlops_model_info", predictor="onnx") == 1
    # onnxruntime would predict from infinity, and the JSON-lines log could not
    # hold it: refused before either, as on the scikit-learn path.
    # Nor from a number past float32's range, which the graph reads as
    # infinity (the scikit-learn path refuses it too).
    for value, said in ((math.inf, "got inf"), (-1e300, "got -1e+300, beyond")):
        infinite = json.loads(_split(rows.head(1)))
        infinite["dataframe_split"]["data"][0][0] = value
        status, answer = onnx_server.post(json.dumps(infinite).encode())
        assert status == 400, answer
        assert f"row 0: expected a finite number, {said}" in answer["message"], answer
    workers = onnx_server.wait_for_workers(2)
    assert len(workers) == 2
    host = socket.gethostname()
    assert len(_log_lines(onnx_server.log_dir, 15)) >= 15  # written in batches
    files = {p.name for p in onnx_server.log_dir.glob("*.jsonl")}
    assert files and files <= {f"predictions-{host}-{pid}.jsonl" for pid in workers}


def test_a_sha256_mismatch_falls_back_to_sklearn_and_sample_0_logs_nothing(
    repo: Path, onnx_server: Server, model: Any, rows: Any, tmp_path: Path
) -> None:
    _set_onnx(repo, {TAG_ONNX: "verified", TAG_ONNX_SHA256: "0" * 64})
    server = _start(repo, tmp_path, "--log-sample", "0")
    try:
        version = json.loads(server.get("/version")[1])
        assert version["predictor"] == "sklearn"
        assert (
            f"the version's {TAG_ONNX_SHA256} tag {'0' * 64}" in version["onnx"]["why"]
        )
        status, answer = server.post(_split(rows))
        assert status == 200
        assert answer["predictions"] == [int(p) for p in model.predict(rows)]
        time.sleep(0.5)
        assert not server.log_dir.exists() or not any(server.log_dir.iterdir())
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def small_log_server(
    repo: Path, onnx_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``python -m stages.serving`` rotating its log at 1 KiB, two backups."""
    tmp = tmp_path_factory.mktemp("small-log")
    server = _start(repo, tmp, "--log-max-bytes", "1024", "--log-backups", "2")
    yield server
    server.stop()


def test_the_log_rotates_by_size_keeping_the_backups(
    small_log_server: Server, rows: Any
) -> None:
    server = small_log_server
    for i in range(8):
        assert server.post(_split(rows.head(3)), **{"X-Request-ID": f"r{i}"})[0] == 200
    [pid] = server.worker_pids()
    base = f"predictions-{socket.gethostname()}-{pid}.jsonl"
    # Each line is over 1 KiB, so each file holds one; the oldest are gone.
    want = ["r7", "r6", "r5"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the writer thread works in batches
        ids = [e["request_id"] for e in _log_lines(server.log_dir)]
        if ids == want:
            break
        time.sleep(0.1)
    # Listed after the last line is in (listed before it, under load, the
    # folder could still be empty while _log_lines waited for the writer).
    files = sorted(p.name for p in server.log_dir.iterdir())
    assert files == [base, f"{base}.1", f"{base}.2"]
    assert ids == want


def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    small_log_server: Server, model: Any, rows: Any
) -> None:
    server = small_log_server
    body = _split(rows.head(2))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None  # still waiting for our body
        with (
            pytest.raises(OSError),
            socket.create_connection(("127.0.0.1", server.port), timeout=2),
        ):
            pass  # no longer accepting new connections
        sock.sendall(body[len(body) // 2 :])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    answer = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert answer["predictions"] == [int(p) for p in model.predict(rows.head(2))]
    assert server.proc.wait(timeout=30) == 0


def test_an_unknown_version_is_an_error_even_without_params_yaml(repo: Path) -> None:
    # A serving pod has mlops.yaml but no compiled params.yaml: the CLI hands
    # the params over, so the error is about the version, not the file.
    params = repo / "params.yaml"
    params.rename(repo / "params.yaml.away")
    try:
        proc = run(
            [sys.executable, "-m", "runner.cli", "serve", "--version", "99",
             "--port", str(_free_port())],
            cwd=repo, check=False,
        )  # fmt: skip
    finally:
        (repo / "params.yaml.away").rename(params)
    assert proc.returncode == 1
    assert "cancer-classifier has no version 99 in the registry" in proc.stderr


def test_deploy_check_only_smoke_tests_mlops_serve_and_stops_it(repo: Path) -> None:
    port = _free_port()
    proc = run(
        [sys.executable, "-m", "runner.cli", "deploy", "--check-only",
         "--port", str(port), "--timeout", "60"],
        cwd=repo, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"http://127.0.0.1:{port}/ready answered 200" in proc.stdout
    assert "smoke test: POST" in proc.stdout and "(same as the model locally)" in (
        proc.stdout
    )
    assert "check passed; stopping the server (cancer-classifier version 1)" in (
        proc.stdout
    )
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 2):
        pass


# Pure parts: no server, no MLflow.

COLUMNS = (
    inputs.Column("x", "double"),
    inputs.Column("n", "long"),
    inputs.Column("flag", "boolean"),
    inputs.Column("city", "string"),
)


def _parse(doc: Any) -> list[Any]:
    return [
        a.tolist()
        for a in inputs.parse("application/json", json.dumps(doc).encode(), COLUMNS)
    ]


def test_parse_reads_every_format_into_signature_order() -> None:
    rows = [[1.5, 2, True, "Oslo"], [None, 3, False, None]]
    want = [[1.5, math.nan], [2, 3], [True, False], ["Oslo", None]]
    split = {"columns": ["x", "n", "flag", "city"], "data": rows}
    shuffled = {"columns": ["city", "flag", "n", "x"],
                "data": [list(reversed(r)) for r in rows]}  # fmt: skip
    records = [dict(zip(split["columns"], r, strict=True)) for r in rows]
    got = [
        _parse({"dataframe_split": split}),
        _parse({"dataframe_split": shuffled}),
        _parse({"dataframe_split": {"data": rows}}),  # no columns: signature order
        _parse({"dataframe_records": records}),
        _parse({"instances": records}),
        _parse(
            {
                "inputs": {
                    k: [r[i] for r in rows] for i, k in enumerate(split["columns"])
                }
            }
        ),
    ]
    for parsed in got:
        assert parsed[1:] == want[1:]
        assert parsed[0][0] == 1.5 and math.isnan(parsed[0][1])
    csv = "\ufeffcity,x,n,flag\nOslo,1.5,2,true\n,,3,false\n".encode()
    parsed = [a.tolist() for a in inputs.parse("text/csv", csv, COLUMNS)]
    assert parsed[1:] == want[1:] and parsed[0][0] == 1.5


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": {"x": [1.0], "n": [1.5], "flag": [True], "city": ["a"]}},
         "column 'n' (long), row 0: expected an integer, got a number 1.5"),
        ({"inputs": {"x": [True], "n": [1], "flag": [True], "city": ["a"]}},
         "column 'x' (double), row 0: expected a number, got a boolean true"),
        ({"inputs": {"x": [1.0], "n": [1], "flag": [1], "city": ["a"]}},
         "column 'flag' (boolean), row 0: expected true or false, got an integer 1"),
        ({"inputs": {"x": [1.0], "n": [10**30], "flag": [True], "city": ["a"]}},
         "column 'n' (long): a number is out of range"),
        ({"inputs": {"x": [1.0, 2.0], "n": [1], "flag": [True], "city": ["a"]}},
         "inputs columns differ in length"),
        ({"dataframe_split": {"data": [[1.0, 1, True]]}},
         "dataframe_split row 0 must be a list of 4 values"),
        ({"dataframe_split": {"columns": ["x", "x", "n", "flag"], "data": []}},
         "missing column(s) 'city'; repeated column(s) 'x'"),
        ({"dataframe_records": {"x": 1}}, "dataframe_records must be a list of records"),
        ({"inputs": {"x": [-math.inf], "n": [1], "flag": [True], "city": ["a"]}},
         "column 'x' (double), row 0: expected a finite number, got -inf"),
        ({"inputs": {"x": [3.4e38, 3.5e38], "n": [1, 2], "flag": [True] * 2,
                     "city": ["a", "b"]}},
         "column 'x' (double), row 1: expected a finite number, got 3.5e+38, "
         "beyond what the model computes in"),
        ({"dataframe_split": [], "inputs": []}, "exactly one of the keys"),
        ([1, 2], "exactly one of the keys"),
    ],
)  # fmt: skip
def test_parse_refuses_what_does_not_fit_the_signature(doc: Any, message: str) -> None:
    with pytest.raises(inputs.BadRequest) as caught:
        _parse(doc)
    assert message in str(caught.value)


def test_a_file_changed_after_its_check_is_not_loaded(tmp_path: Path) -> None:
    from stages.serving import predictor

    path = tmp_path / "model.skops"
    path.write_bytes(b"checked bytes")
    digest = hashlib.sha256(b"checked bytes").hexdigest()
    assert predictor.checked_bytes(path, digest) == b"checked bytes"
    path.write_bytes(b"swapped bytes")
    with pytest.raises(RuntimeError, match="changed since it was checked"):
        predictor.checked_bytes(path, digest)
