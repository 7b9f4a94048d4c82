"""`mlops serve` under a steady load on 127.0.0.1 (issue 12, item 12).

200 single-row predictions a second for 60 seconds, paced (open loop: each
request leaves at its scheduled time whether or not the earlier ones were
answered, and its latency counts from that time), from a load generator in a
process of its own so that this interpreter does not limit it. The same
process polls ``/health`` every second. The test reads the server's resident
memory from /proc after a warm-up and at the end.

Run as a module, this file is that load generator::

    python -m tests.reliability.test_serving_load PORT RATE SECONDS BODY OUT
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.serving.server import KEEP_ALIVE_SECONDS

RATE = 200  # requests a second
SECONDS = 60
WARM_UP_SECONDS = 5
MAX_GROWTH = 0.10  # of the servers' resident memory, end against after warm-up
REQUEST_TIMEOUT = 10.0
HEALTH_TIMEOUT = 2.0
P99_BOUND_MS = 2000  # only a sanity bound: the figure is what is recorded


# --- the load generator (its own process) ---

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """One request on an open connection: the status and whether it stays open."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before an answer")
    status = int(status_line.split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and "close" in value.lower():
            keep = False
    await reader.readexactly(length)
    return status, keep


class Generator:
    """Paced requests from a pool of keep-alive connections, and health polls."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.request = (
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        # Open connections, the least recently used first, and when each was.
        self.idle: deque[tuple[float, Connection]] = deque()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lag = 0.0  # how late the generator itself sent a request, at worst
        self.health: list[tuple[float, int, float]] = []

    async def one(self, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        self.lag = max(self.lag, loop.time() - scheduled)
        conn = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                conn = self.reuse() or await asyncio.open_connection(
                    "127.0.0.1", self.port
                )
                status, keep = await _exchange(*conn, self.request)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            self.errors[type(e).__name__] += 1
            if conn is not None:
                conn[1].close()
            return
        self.latencies.append(loop.time() - scheduled)
        self.statuses[str(status)] += 1
        if keep:
            self.idle.append((loop.time(), conn))
        else:
            conn[1].close()

    def reuse(self) -> Connection | None:
        """The most recently used open connection, as HTTP clients pick one; those
        idle for nearly the server's keep-alive time are closed instead, as
        clients with an idle timeout do, so no request races the server's close."""
        now = asyncio.get_running_loop().time()
        while self.idle and now - self.idle[0][0] > KEEP_ALIVE_SECONDS - 1:
            self.idle.popleft()[1][1].close()
        while self.idle:
            _, conn = self.idle.pop()
            if not conn[0].at_eof():
                return conn
            conn[1].close()
        return None

    async def poll_health(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() < until:
            began = loop.time()
            status = 0
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT):
                    conn = await asyncio.open_connection("127.0.0.1", self.port)
                    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    status, _ = await _exchange(*conn, request)
                    conn[1].close()
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                pass
            self.health.append((began - start, status, loop.time() - began))
            await asyncio.sleep(max(0.0, began + 1 - loop.time()))

    async def run(self, rate: int, seconds: float) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        poller = asyncio.create_task(self.poll_health(start + seconds))
        tasks = set()
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            task = asyncio.create_task(self.one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, poller)
        return loop.time() - start


def generate(port: int, rate: int, seconds: float, body: Path, out: Path) -> None:
    """Drive the server, then write what happened as JSON (latencies in ms)."""
    gen = Generator(port, body.read_bytes())
    elapsed = asyncio.run(gen.run(rate, seconds))
    lat = sorted(x * 1000 for x in gen.latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    out.write_text(json.dumps({
        "sent": int(rate * seconds), "answered": len(lat), "seconds": elapsed,
        "statuses": gen.statuses, "errors": gen.errors, "lag_ms": gen.lag * 1000,
        "p50_ms": q[49], "p99_ms": q[98], "max_ms": lat[-1] if lat else None,
        "health": gen.health,
    }))  # fmt: skip


if __name__ == "__main__":
    port_, rate_, seconds_, body_, out_ = sys.argv[1:]
    generate(int(port_), int(rate_), float(seconds_), Path(body_), Path(out_))
    raise SystemExit(0)


# --- the test ---

import pytest  # noqa: E402 - the generator above runs without pytest

from stages import common  # noqa: E402
from tests.conftest import ExampleRun  # noqa: E402
from tests.support import ROOT, quiet_env  # noqa: E402
from tests.test_serve import MODEL, Server, _client, _split, _start  # noqa: E402


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, example_run: ExampleRun
) -> Iterator[tuple[Server, Path]]:
    """`mlops serve` with the example's settings (one worker, every request
    logged), on version 1 @production; and a one-row request body."""
    repo = example_run.copy(tmp_path_factory.mktemp("load") / "repo")
    _client(repo).set_registered_model_alias(MODEL, "production", "1")
    test = common.read_parquet(repo / "artifacts/preprocess/test.parquet")
    body = tmp_path_factory.mktemp("load-body") / "body.json"
    body.write_bytes(_split(test.drop(columns=["target"]).head(1)))
    started = _start(repo, tmp_path_factory.mktemp("load-server"), cli=True)
    yield started, body
    assert started.stop() == 0


def _rss_mb(pids: set[int]) -> float:
    """The processes' resident memory, from /proc."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _load(server: Server, body: Path, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.test_serving_load",
         str(server.port), str(RATE), str(seconds), str(body), str(out)],
        cwd=ROOT, env=quiet_env(),
    )  # fmt: skip


def test_200_a_second_for_60_seconds(
    figure: Any, server: tuple[Server, Path], tmp_path: Path
) -> None:
    srv, body = server
    pids = {srv.proc.pid} | srv.wait_for_workers(1)
    warm = _load(srv, body, WARM_UP_SECONDS, tmp_path / "warm.json")
    assert warm.wait(timeout=WARM_UP_SECONDS + 60) == 0
    rss_warm = _rss_mb(pids)
    gen = _load(srv, body, SECONDS, tmp_path / "load.json")
    peak = rss_warm
    while gen.poll() is None:
        peak = max(peak, _rss_mb(pids))
        time.sleep(1)
    assert gen.returncode == 0
    rss_end = _rss_mb(pids)
    got = json.loads((tmp_path / "load.json").read_text())

    assert srv.proc.poll() is None, "the server died under load"
    statuses, errors = got["statuses"], got["errors"]
    assert not errors, f"requests without an answer: {errors}"
    assert statuses == {"200": got["sent"]}, statuses  # no 5xx, nor anything else
    # The generator kept its pace (else the test measured less than it says).
    assert got["seconds"] < SECONDS + 5 and got["lag_ms"] < 1000, got
    assert got["p99_ms"] < P99_BOUND_MS, got["p99_ms"]
    health = got["health"]
    assert len(health) >= SECONDS - 2, len(health)
    red = [h for h in health if h[1] != 200]
    assert not red, f"/health not green at {red}"
    growth = (rss_end - rss_warm) / rss_warm
    assert growth < MAX_GROWTH, f"memory grew {growth:.1%}: {rss_warm} -> {rss_end} MB"
    figure(
        "load",
        f"{RATE} single-row predictions a second for {SECONDS} s (open loop, "
        "one worker, every request logged), /health polled every second",
        f"all {got['sent']} answered 200; /health 200 at every poll; memory "
        f"grew {growth:.1%} (limit {MAX_GROWTH:.0%})",
        requests=got["sent"],
        p50_ms=round(got["p50_ms"], 1),
        p99_ms=round(got["p99_ms"], 1),
        max_ms=round(got["max_ms"], 1),
        health_polls=len(health),
        slowest_health_ms=round(max(h[2] for h in health) * 1000, 1),
        rss_mb_after_warm_up=round(rss_warm, 1),
        rss_mb_end=round(rss_end, 1),
        rss_mb_peak=round(peak, 1),
    )
