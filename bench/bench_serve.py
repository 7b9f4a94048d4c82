"""Throughput and latency of `mlops serve` beside `mlflow models serve`.

    .venv/bin/python bench/bench_serve.py [--seconds 10] [--clients 4]
        [--repo DIR] [--json PATH]

Runs the bundled example in a throw-away copy (or uses ``--repo``, a copy that
already ran), makes its version the production one and, when the register
stage did not leave a verified ONNX conversion, converts it the same way and
tags it. Then, one server at a time on 127.0.0.1, a load generator in a
process of its own (``--clients`` threads, each one keep-alive
``http.client`` connection, single-row ``dataframe_split`` requests from the
test split, for ``--seconds``) measures requests per second, p50 and p99
latency and errors. Startup is timed from the server process's start to its
first 200 from ``/ready`` (``/ping`` for MLflow) with the model already on
disk; ``mlops serve``'s fetch and check (MLflow, download, allow-list) is
timed on its own. Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_cli import ENV, MLOPS, copy_example

BENCH = Path(__file__).resolve().parent
MODEL = "cancer-classifier"
MAX_REQUESTS = 2_000_000  # per client: the duration ends a run long before
READY_TIMEOUT = 120
FETCH = """
import json, sys, time
from stages import common
from stages.serving import cli, fetch
t = time.perf_counter()
params = common.load_params()
served, _ = fetch.prepare(params)
args = cli.argparse.Namespace(
    host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]),
    max_request_bytes=1048576, log_dir=sys.argv[3], log_sample=1.0,
    log_max_bytes=104857600, log_backups=10,
)
config = cli.server_config(served, args, 0)
print(json.dumps({"seconds": time.perf_counter() - t, "config": config}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the load generator, run as `bench_serve.py --load ...` in its own process ---


def _client(port: int, bodies: list[bytes], deadline: float, out: list[Any]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    latencies, errors, i = [], 0, 0
    while time.perf_counter() < deadline and i < MAX_REQUESTS:
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            ok = r.status == 200  # noqa: PLR2004
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append(time.perf_counter() - start)
        errors += not ok
    conn.close()
    out.append((latencies, errors))


def load(port: int, bodies_file: Path, seconds: float, clients: int) -> dict[str, Any]:
    """Drive the server with keep-alive clients; latencies in milliseconds."""
    bodies = [b.encode() for b in json.loads(bodies_file.read_text())]
    results: list[Any] = []
    start = time.perf_counter()
    deadline = start + seconds
    threads = [
        threading.Thread(target=_client, args=(port, bodies, deadline, results))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(x for latencies, _ in results for x in latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    return {
        "requests": len(lat),
        "errors": sum(e for _, e in results),
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


# --- servers ---


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes]) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < READY_TIMEOUT:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:  # noqa: PLR2004
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"the server was not ready within {READY_TIMEOUT}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def measure(
    name: str, cmd: list[str], *, env: dict[str, str], port: int, ready: str,
    repo: Path, args: argparse.Namespace, bodies: Path,
) -> dict[str, Any]:  # fmt: skip
    """Start one server, time its startup, load it, stop it."""
    log = open(repo / f"bench-{port}.log", "w")
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        startup = wait_ready(port, ready, proc)
        loadgen = subprocess.run(
            [
                sys.executable,
                __file__,
                "--load",
                str(port),
                "--bodies",
                str(bodies),
                "--seconds",
                str(args.seconds),
                "--clients",
                str(args.clients),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=ENV,
        )
    finally:
        stop(proc)
        log.close()
    result = json.loads(loadgen.stdout.splitlines()[-1])
    result.update({"server": name, "startup_s": startup})
    print(f"  {name}: {result['rps']:.0f} req/s", file=sys.stderr)
    return result


def prepare_repo(args: argparse.Namespace, tmp: Path) -> Path:
    """A copy of the example that ran, with version 1 in production and ONNX."""
    if args.repo:
        return Path(args.repo).resolve()
    repo = copy_example(tmp / "repo")
    subprocess.run([*MLOPS, "run"], cwd=repo, env=ENV, check=True, capture_output=True)
    return repo


def ensure_production_and_onnx(repo: Path) -> str:
    """Make version 1 production; convert and tag it unless register did."""
    code = f"""
import hashlib, json, tempfile, pathlib, mlflow
from stages import common, modelfile, onnx_export, register
c = mlflow.MlflowClient("sqlite:///.mlops/mlflow.db")
c.set_registered_model_alias({MODEL!r}, "production", "1")
v = c.get_model_version({MODEL!r}, "1")
if v.tags.get(register.TAG_ONNX) == onnx_export.VERIFIED:
    print("register stage")
else:
    params = common.load_params()
    allow = common.project_allow(params)
    model = modelfile.load_model_dir("artifacts/train/model", allow)
    cols = onnx_export.signature_columns("artifacts/train/model")
    data = onnx_export.convert(model, cols)
    d = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
    d.write_bytes(data)
    c.log_artifact(v.run_id, str(d), register.ONNX_ARTIFACT_DIR)
    c.set_model_version_tag({MODEL!r}, "1", register.TAG_ONNX, onnx_export.VERIFIED)
    c.set_model_version_tag({MODEL!r}, "1", register.TAG_ONNX_SHA256,
                            hashlib.sha256(data).hexdigest())
    print("bench_serve.py (onnx_export.convert)")
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def request_bodies(repo: Path, path: Path) -> None:
    """Single-row dataframe_split bodies, one per test row."""
    code = """
import json, sys, pandas as pd
x = pd.read_parquet("artifacts/preprocess/test.parquet").drop(columns=["target"])
out = []
for i in range(len(x)):
    split = json.loads(x.iloc[[i]].to_json(orient="split", index=False))
    out.append(json.dumps({"dataframe_split": split}))
print(json.dumps(out))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    path.write_text(out.stdout.splitlines()[-1])


def fetch_config(repo: Path, port: int, workers: int) -> tuple[float, dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            FETCH,
            str(port),
            str(workers),
            str(repo / ".mlops" / "bench-predictions"),
        ],
        cwd=repo,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads(out.stdout.splitlines()[-1])
    return float(doc["seconds"]), doc["config"]


def run_all(args: argparse.Namespace, repo: Path, bodies: Path) -> dict[str, Any]:
    """Every server in turn; then `mlops serve` end to end, start to /ready."""
    rows = []
    port = free_port()
    mlflow_env = {**ENV, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
           str(repo / "artifacts/train/model"), "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    rows.append(
        measure(
            "mlflow models serve",
            cmd,
            env=mlflow_env,
            port=port,
            ready="/ping",
            repo=repo,
            args=args,
            bodies=bodies,
        )
    )
    fetches = []
    for name, workers, onnx in [
        ("mlops serve (onnx, 1 worker)", 1, True),
        ("mlops serve (onnx, 2 workers)", 2, True),
        ("mlops serve (sklearn fallback, 1 worker)", 1, False),
    ]:
        port = free_port()
        secs, config = fetch_config(repo, port, workers)
        fetches.append(secs)
        if not onnx:
            config["served"]["onnx"] = None
        env = {**ENV, "MLOPS_SERVING_CONFIG": json.dumps(config)}
        cmd = [sys.executable, "-m", "stages.serving.server"]
        rows.append(
            measure(
                name,
                cmd,
                env=env,
                port=port,
                ready="/ready",
                repo=repo,
                args=args,
                bodies=bodies,
            )
        )
    port = free_port()
    proc = subprocess.Popen(
        [*MLOPS, "serve", "--port", str(port)],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end_to_end = wait_ready(port, "/ready", proc)
    finally:
        stop(proc)
    return {"rows": rows, "fetch_s": fetches, "mlops_serve_to_ready_s": end_to_end}


def table(report: dict[str, Any]) -> str:
    base = report["rows"][0]
    lines = [
        "| server | req/s | p50 (ms) | p99 (ms) | errors | startup to ready (s) "
        "| req/s vs MLflow | p99 vs MLflow |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['server']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {r['startup_s']:.2f} | "
            f"{r['rps'] / base['rps']:.1f}x | {r['p99_ms'] / base['p99_ms']:.2f}x |"
        )
    fetch = report["fetch_s"]
    lines += [
        "",
        f"Fetch and check before the server starts (MLflow, cached download, "
        f"allow-list): {fetch[0]:.2f}s the first time (download), "
        f"{statistics.median(fetch[1:]):.2f}s cached.",
        f"`mlops serve` from the command to /ready 200, fetch included: "
        f"{report['mlops_serve_to_ready_s']:.2f}s.",
        f"ONNX conversion from: {report['onnx_from']}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repo", help="a copy of the example that already ran")
    parser.add_argument("--json", default=".mlops/bench/serve.json")
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        result = load(args.load, Path(args.bodies), args.seconds, args.clients)
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare_repo(args, Path(tmp))
        onnx_from = ensure_production_and_onnx(repo)
        bodies = Path(tmp) / "bodies.json"
        request_bodies(repo, bodies)
        shutil.rmtree(repo / ".mlops" / "serving", ignore_errors=True)  # cold fetch
        report = run_all(args, repo, bodies)
    report.update(
        {
            "onnx_from": onnx_from,
            "seconds": args.seconds,
            "clients": args.clients,
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
        }
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.clients} keep-alive clients in one process, {args.seconds:.0f}s "
        f"each, single-row dataframe_split; {os.cpu_count()} cores\n"
    )
    print(table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
