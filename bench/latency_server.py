"""A loopback upstream that answers after a fixed delay: `python -m bench.latency_server`.

HTTP/1.1 on 127.0.0.1, keep-alive, small JSON bodies, on one asyncio event loop (an
`asyncio.Protocol` per connection, the delay a `call_later`: no task, no thread per
request), so one process serves hundreds of concurrent connections with little CPU:

- `GET /customers/{id}` -> `{"id", "name", "email", "currency"}` (what the demo's CRM says)
- `PUT /customers/{id}` (any body) -> `{"billing_id": "b_{id}"}` (what Billing says)
- `GET /_stats` (no delay) -> requests served, connections opened, most requests in flight
  at once, most connections open at once (the benchmark reads them to see how many
  connections the worker's clients really used)
- anything else -> 404

Run it in its own process (the benchmark does: `start()`): it prints `port N` once it
listens, and stops on SIGTERM/SIGINT (and, with --stdin-eof-stops, as `start()` runs it,
when its stdin closes: a benchmark that dies leaves no server behind).

    python -m bench.latency_server --delay-ms 50 [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REASONS = {200: b"OK", 404: b"Not Found", 400: b"Bad Request"}


@dataclass
class Stats:
    requests: int = 0
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "connections": self.connections,
                "max_open_connections": self.max_open, "max_in_flight": self.max_in_flight}


class _Conn(asyncio.Protocol):
    """One keep-alive connection: requests are answered in order (HTTP/1.1 clients such as
    httpx send the next one only after the answer)."""

    def __init__(self, delay: float, stats: Stats) -> None:
        self.delay = delay
        self.stats = stats
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request is waiting for its delayed answer
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        s = self.stats
        s.connections += 1
        s.open_now += 1
        s.max_open = max(s.max_open, s.open_now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stats.open_now -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            self._answer(400, {"error": "bad request line"}, close=True)
            return
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip() or 0)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        end = head_end + 4 + length
        if len(self.buf) < end:
            return  # the body is still on its way
        self.buf = self.buf[end:]
        s = self.stats
        s.requests += 1
        if target == "/_stats":
            self._answer(200, s.as_dict(), close=close)
            return
        status, body = _route(method, target)
        self.busy = True
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        asyncio.get_running_loop().call_later(self.delay, self._delayed, status, body, close)

    def _delayed(self, status: int, body: dict[str, Any], close: bool) -> None:
        self.stats.in_flight -= 1
        self.busy = False
        if self.closed:
            return
        self._answer(status, body, close=close)
        if not close and self.buf:
            self._next()

    def _answer(self, status: int, body: dict[str, Any], *, close: bool) -> None:
        assert self.transport is not None
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"%s\r\n" % (status, _REASONS.get(status, b"OK"), len(payload),
                             b"connection: close\r\n" if close else b""))
        self.transport.write(head + payload)
        if close:
            self.transport.close()


def _route(method: str, target: str) -> tuple[int, dict[str, Any]]:
    path = target.split("?", 1)[0]
    # /customers/{id}, under any prefix (an upstream's base URL may carry a path).
    _prefix, sep, key = path.rpartition("/customers/")
    if sep and key and "/" not in key:
        if method == "GET":
            return 200, {"id": key, "name": f"Customer {key}", "email": f"{key}@example.com",
                         "currency": "EUR"}
        if method == "PUT":
            return 200, {"billing_id": f"b_{key}"}
    return 404, {"error": f"no route {method} {path}"}


async def serve(port: int, delay: float, *, host: str = "127.0.0.1",
                backlog: int = 2048, stdin_eof_stops: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    server = await loop.create_server(lambda: _Conn(delay, stats), host, port,
                                      backlog=backlog, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:  # the parent went away (or closed our stdin): stop
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.read()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    if stdin_eof_stops:
        threading.Thread(target=watch_stdin, daemon=True).start()
    bound = server.sockets[0].getsockname()[1]
    print(f"port {bound}", flush=True)
    async with server:
        await stop.wait()


@dataclass
class Running:
    """A latency server in its own process (`start()`); `url`, `stats()`, `stop()`."""

    proc: subprocess.Popen[str]
    port: int
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        import httpx

        return dict(httpx.get(f"{self.url}/_stats", timeout=5).json())

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(delay_ms: float = 50.0) -> Running:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.latency_server", "--delay-ms", str(delay_ms),
         "--stdin-eof-stops"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("port "):
        proc.kill()
        raise RuntimeError(f"latency server did not start (exit {proc.wait()})")
    return Running(proc, int(line.split()[1]))


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency_server",
                                description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="answer delay (default 50)")
    p.add_argument("--stdin-eof-stops", action="store_true",
                   help="stop when stdin closes (for a parent process that owns the server)")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay_ms / 1000.0,
                          stdin_eof_stops=args.stdin_eof_stops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
