"""Load benchmark of the storefront service's persona endpoint: POST /v1/persona at a fixed
rate, open loop, against the real service (uvicorn, one worker, loopback).

For each mode the service is started in its own process (``service.serve``: the socket has
TCP_NODELAY, access log off), warmed with synthetic sessions (``sessions.generate_sessions``,
their events posted to /v1/events and applied by the consumer) so the feature store holds
them, then hit at ``--rate`` requests per second for ``--requests`` requests. The schedule is
open loop: request i is due at t0 + i / rate whether or not earlier ones have answered, and
its latency is measured from when it was due (so a stall is not hidden by the client waiting:
no coordinated omission). The client is an asyncio loop over raw keep-alive connections in
this process, separate from the server's, with a pool that grows when every connection is
busy. Modes:

* ``embedded``: in-process stream and feature store (``CXAGENT_REDIS_URL`` unset);
* ``redis``: the real Redis at ``--redis`` (a key prefix of its own, deleted afterwards);
* ``redis-down``: Redis at a closed port, so every request takes the fallback path.

Prints JSON: per mode p50/p95/p99/max latency in ms, errors, the achieved rate, how late the
client sent (its own overhead), what answered (store / fallback) and the service's own
latency reservoir for the endpoint.

    .venv/bin/python benchmarks/storefront_load.py                 # all three modes
    .venv/bin/python benchmarks/storefront_load.py --mode embedded --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cxagent.storefront.sessions import generate_sessions

DOWN_URL = "redis://127.0.0.1:1/0"
SERVER_CODE = """
import sys
from cxagent.storefront.service import StorefrontSettings, serve
redis_url, prefix, db_url, port = sys.argv[1:5]
settings = StorefrontSettings(redis_url=redis_url or None, prefix=prefix, db_url=db_url)
serve(settings, host="127.0.0.1", port=int(port))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Service:
    """The storefront service in a subprocess."""

    def __init__(self, redis_url: str | None, prefix: str, folder: Path) -> None:
        self.port = free_port()
        self.log_path = folder / f"server-{self.port}.log"
        db_url = f"sqlite:///{folder / f'storefront-{self.port}.db'}"
        args = [redis_url or "", prefix, db_url, str(self.port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("CXAGENT_REDIS_URL", None)
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVER_CODE, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited:\n{self.log_path.read_text()}")
            try:
                self.get("/v1/health")
                return
            except OSError:
                self.conn.close()
                if time.monotonic() > deadline:
                    raise RuntimeError("service did not start") from None
                time.sleep(0.1)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        for attempt in (1, 2):  # the server closes a keep-alive connection idle for 5 s
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                return r.status, json.loads(r.read())
            except (http.client.RemoteDisconnected, ConnectionError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def stop(self) -> None:
        self.conn.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def warm(service: Service, sessions: int, seed: int) -> list[str]:
    """Post every event of ``sessions`` synthetic sessions; wait until all are applied."""
    generated = generate_sessions(sessions, seed=seed)
    events = 0
    for s in generated:
        for e in s.events:
            status, body = service.request("POST", "/v1/events", json.loads(e.model_dump_json()))
            if status != 202:
                raise RuntimeError(f"event refused: {status} {body}")
            events += 1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        consumer = service.get("/v1/health")["consumer"]
        if consumer["applied"] + consumer["duplicates"] >= events:
            break
        time.sleep(0.2)
    return [s.session_id for s in generated]


async def _send(
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    port: int,
    payload: bytes,
) -> tuple[int, bytes, bool]:
    opened = False
    reader: asyncio.StreamReader | None = None
    while pool and reader is None:
        reader, writer = pool.pop()
        if reader.at_eof():  # the server closed it (keep-alive timeout): drop it
            writer.close()
            reader = None
    if reader is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened = True
    writer.write(payload)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        if opened:
            raise
        # closed by the server while we wrote: once more on a new connection (idempotent)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened = True
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    pool.append((reader, writer))
    return status, body, opened


async def fire(port: int, session_ids: list[str], rate: float, n: int, seed: int) -> dict[str, Any]:
    """``n`` POST /v1/persona requests due at a fixed ``rate``, open loop."""
    rng = random.Random(seed)
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(16):
        pool.append(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    service_times: list[float] = []
    lateness: list[float] = []
    errors: dict[str, int] = {}
    sources: dict[str, int] = {}
    opened = 0
    loop = asyncio.get_running_loop()

    async def one(due: float, sid: str) -> None:
        nonlocal opened
        sent = loop.time()
        lateness.append(sent - due)
        body = json.dumps({"session_id": sid}).encode()
        payload = (
            b"POST /v1/persona HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        try:
            status, answer, new = await asyncio.wait_for(_send(pool, port, payload), 10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        done = loop.time()
        opened += new
        if status != 200:
            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
            return
        source = json.loads(answer)["source"]
        sources[source] = sources.get(source, 0) + 1
        latencies.append(done - due)
        service_times.append(done - sent)

    tasks = []
    t0 = loop.time() + 0.2
    for i in range(n):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, rng.choice(session_ids))))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - t0
    for _, writer in pool:
        writer.close()
    ms = [1000 * x for x in latencies]
    return {
        "requests": n,
        "ok": len(latencies),
        "errors": errors,
        "target_rps": rate,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(quantile(ms, 0.50), 3),
            "p95": round(quantile(ms, 0.95), 3),
            "p99": round(quantile(ms, 0.99), 3),
            "max": round(max(ms), 3) if ms else None,
        },
        "client_send_lateness_ms_p99": round(1000 * quantile(lateness, 0.99), 3),
        "service_time_ms_p99": round(1000 * quantile(service_times, 0.99), 3),
        "extra_connections": opened,
        "answered_from": sources,
    }


def run_mode(mode: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    prefix = f"cxagent-bench:{uuid.uuid4().hex[:8]}:"
    redis_url = {"embedded": None, "redis": args.redis, "redis-down": DOWN_URL}[mode]
    service = Service(redis_url, prefix, folder)
    try:
        started = time.monotonic()
        if mode == "redis-down":
            sessions = [f"syn-down-{i:05d}" for i in range(args.sessions)]
        else:
            sessions = warm(service, args.sessions, args.seed)
        warm_s = time.monotonic() - started
        load_before = os.getloadavg()[0]
        result = asyncio.run(fire(service.port, sessions, args.rate, args.requests, args.seed))
        result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        own = service.get("/v1/analytics")["latency"].get("POST /v1/persona", {})
        return {
            "mode": mode,
            "warm_sessions": len(sessions),
            "warm_seconds": round(warm_s, 1),
            **result,
            "service_reservoir_ms": {k: own.get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
        }
    finally:
        service.stop()
        if mode == "redis":
            import redis

            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "redis", "redis-down", "all"], default="all")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--sessions", type=int, default=300, help="synthetic sessions to warm")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.requests < 1 or args.requests > 100_000:
        parser.error("--rate must be > 0 and --requests within 1..100000")
    modes = ["embedded", "redis", "redis-down"] if args.mode == "all" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="sf-load-") as tmp:
        results = [run_mode(mode, args, Path(tmp)) for mode in modes]
    command = "python benchmarks/storefront_load.py " + " ".join(argv or sys.argv[1:])
    print(
        json.dumps({"command": command.strip(), "machine": machine(), "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
