"""The demo CRM and Billing: an httpx transport in-process, or real HTTP on loopback.

Routes (the CRM under /crm, Billing under /billing when served together):
  GET /crm/customers/{id}      GET /crm/invoices/{id}
  PUT /billing/customers/{id}  PUT /billing/invoices/{id}
  GET /_stats                  Billing writes counted per correlation id (tests)
  GET /{name}/items/{id}       any other upstream name: a generic 200 (protection tests)

Control (upstream protection tests, issue 11), per upstream name (the first path part):
  POST /_control {"upstream": "crm", "rate": 100, "outage": "refuse" | "503" | null,
                  "latency": 0.05}
       rate: requests a second it answers (above: 429 with Retry-After until the next
       second); outage "refuse": the connection is closed without an answer, "503": 503s
  GET /_counters               answers per upstream, per wall-clock second, per status
                               ("refused" for closed connections)

Scenario ids are deterministic so tests and screenshots are stable; see SCENARIOS.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx

# (entity id, expected final status, what happens) — documented in the README, used by `demo`.
SCENARIOS: list[tuple[str, str, str, str]] = [
    ("customer", "c_1001", "success", "CRM and Billing answer 200"),
    ("invoice", "i_2001", "success", "CRM and Billing answer 200"),
    ("customer", "c_flaky", "success", "CRM answers 503 twice, then 200"),
    ("invoice", "i_flaky", "success", "CRM answers 503 twice, then 200"),
    ("customer", "c_1002", "dead", "Billing answers 429 Retry-After: 1 every time"),
    ("invoice", "i_2002", "dead", "Billing answers 429 Retry-After: 1 every time"),
    ("customer", "c_missing", "failed", "CRM answers 404 (NotFound)"),
    ("customer", "c_invalid", "failed", "CRM answers a record that fails validation"),
]

_KNOWN = re.compile(r"^[ci]_\d+$")
_FLAKY_FAILURES = 2

# Fault ids for the reliability tests: CRM answers these for any job type.
_STATUS_FAULTS = {
    "x_500": (500, {}),
    "x_502": (502, {}),
    "x_503": (503, {}),
    "x_504": (504, {}),
    "x_429": (429, {"Retry-After": "2"}),
    "x_429_none": (429, {}),
    "x_429_bad": (429, {"Retry-After": "soon-ish"}),
    "x_400": (400, {}),
}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json",
                                                        **(headers or {})})


class MockUpstream:
    """Stateful fake of both upstreams; thread-safe so one server can serve many workers."""

    def __init__(self, *, slow_seconds: float = 3.0) -> None:
        self._lock = threading.Lock()
        self._flaky_calls: Counter[str] = Counter()
        self.billing_writes: Counter[str] = Counter()  # correlation id -> successful writes
        self.requests = 0
        self.slow_seconds = slow_seconds
        self._rates: dict[str, float] = {}  # upstream -> requests a second it answers
        self._outages: dict[str, str] = {}  # upstream -> "refuse" | "503"
        self._latency: dict[str, float] = {}  # upstream -> seconds before each answer
        self._window: dict[str, tuple[int, int]] = {}  # upstream -> (second, answered)
        # upstream -> second -> status ("200", "429", "503", "refused") -> requests
        self.counters: dict[str, dict[int, Counter[str]]] = {}

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.requests += 1
        parts = [unquote(p) for p in path.split("?")[0].strip("/").split("/")]
        correlation = headers.get("x-correlation-id", "")
        if parts == ["_stats"]:
            with self._lock:
                return Reply.json(200, {"billing_writes": dict(self.billing_writes),
                                        "requests": self.requests})
        if parts == ["_control"] and method == "POST":
            return self._control(body)
        if parts == ["_counters"]:
            with self._lock:
                return Reply.json(200, {name: {str(sec): dict(c) for sec, c in per.items()}
                                        for name, per in self.counters.items()})
        gate = self._gate(parts[0]) if parts and parts[0] else None
        if gate is not None:
            return gate
        delay = self._latency.get(parts[0], 0.0) if parts else 0.0
        if delay:
            time.sleep(delay)
        reply = self._route(method, parts, path, correlation, headers, body)
        self._count(parts[0] if parts else "", str(reply.status))
        return reply

    def _control(self, body: bytes) -> Reply:
        try:
            spec = json.loads(body or b"{}")
            name = str(spec["upstream"])
        except (ValueError, KeyError, TypeError):
            return Reply.json(400, {"error": "expected {\"upstream\": NAME, ...}"})
        with self._lock:
            if "rate" in spec:
                if spec["rate"] is None:
                    self._rates.pop(name, None)
                else:
                    self._rates[name] = float(spec["rate"])
            if "outage" in spec:
                if spec["outage"] in ("refuse", "503"):
                    self._outages[name] = spec["outage"]
                else:
                    self._outages.pop(name, None)
            if "latency" in spec:
                self._latency[name] = max(0.0, float(spec["latency"] or 0.0))
            if spec.get("reset_counters"):
                self.counters.pop(name, None)
        return Reply.json(200, {"upstream": name, "rate": self._rates.get(name),
                                "outage": self._outages.get(name)})

    def _count(self, name: str, status: str, second: int | None = None) -> None:
        sec = int(time.time()) if second is None else second
        with self._lock:
            self.counters.setdefault(name, {}).setdefault(sec, Counter())[status] += 1

    def _gate(self, name: str) -> Reply | None:
        """An outage or the rate limit answers before the route does."""
        now = time.time()
        sec = int(now)
        with self._lock:
            outage = self._outages.get(name)
            rate = self._rates.get(name)
            limited = False
            if outage is None and rate is not None:
                window, answered = self._window.get(name, (sec, 0))
                if window != sec:
                    window, answered = sec, 0
                limited = answered >= rate
                self._window[name] = (window, answered + (0 if limited else 1))
        if outage == "refuse":
            self._count(name, "refused", sec)
            return Reply(0)  # the server closes the connection without an answer
        if outage == "503":
            self._count(name, "503", sec)
            return Reply.json(503, {"error": f"{name} is down"})
        if limited:
            self._count(name, "429", sec)
            return Reply.json(429, {"error": "rate limited"},
                              {"Retry-After": f"{max(0.001, sec + 1 - now):.3f}"})
        return None

    def _route(self, method: str, parts: list[str], path: str, correlation: str,
               headers: dict[str, str], body: bytes) -> Reply:
        if len(parts) == 3 and parts[0] == "crm" and method == "GET":
            return self._crm(parts[1], parts[2], correlation,
                             headers.get("x-syncbridge-attempt", ""))
        if len(parts) == 3 and parts[0] == "billing" and method == "PUT":
            return self._billing(parts[1], parts[2], correlation, body)
        if len(parts) == 3 and parts[1] == "items":
            return Reply.json(200, {"id": parts[2], "upstream": parts[0]})
        return Reply.json(404, {"error": f"no route {method} {path}"})

    def _crm(self, kind: str, entity: str, correlation: str, attempt: str = "") -> Reply:
        if kind not in ("customers", "invoices"):
            return Reply.json(404, {"error": "unknown collection"})
        fault = self._fault(entity)
        if fault is not None:
            return fault
        if entity.endswith("_flaky"):
            # The attempt header makes "fails twice" hold per job even when the attempts land
            # on different worker processes, each with its own in-process mock.
            with self._lock:
                key = correlation or entity
                self._flaky_calls[key] += 1
                calls = self._flaky_calls[key]
            if attempt.isdigit():
                calls = int(attempt)
            if calls <= _FLAKY_FAILURES:
                return Reply.json(503, {"error": "CRM temporarily unavailable"})
        if entity == "c_invalid":
            return Reply.json(200, {"id": entity, "name": "", "email": "not-an-email",
                                    "currency": "EURO"})
        if not (_KNOWN.match(entity) or entity in ("c_flaky", "i_flaky")):
            return Reply.json(404, {"error": f"{kind[:-1]} {entity} not found"})
        if kind == "customers":
            return Reply.json(200, {"id": entity, "name": f"Customer {entity}",
                                    "email": f"{entity}@example.com", "currency": "EUR"})
        digits = "".join(ch for ch in entity if ch.isdigit()) or "0"
        return Reply.json(200, {"id": entity, "customer_id": "c_1001",
                                "amount_cents": 1000 + int(digits) % 100000, "currency": "EUR"})

    def _billing(self, kind: str, entity: str, correlation: str, body: bytes) -> Reply:
        if entity in ("c_1002", "i_2002"):
            return Reply.json(429, {"error": "rate limited"}, {"Retry-After": "1"})
        try:
            json.loads(body or b"null")
        except ValueError:
            return Reply.json(400, {"error": "invalid JSON"})
        with self._lock:
            self.billing_writes[correlation or entity] += 1
        return Reply.json(200, {"billing_id": f"bill_{kind[0]}_{entity}", "status": "synced"})

    def _fault(self, entity: str) -> Reply | None:
        if entity in _STATUS_FAULTS:
            status, headers = _STATUS_FAULTS[entity]
            return Reply.json(status, {"error": f"injected {status}"}, headers)
        if entity == "x_slow":
            time.sleep(self.slow_seconds)
            return Reply.json(200, {"id": entity, "name": "Slow", "email": "s@example.com",
                                    "currency": "EUR"})
        if entity == "x_badjson":
            return Reply(200, b"{not json", {"Content-Type": "application/json"})
        if entity == "x_huge":
            huge = b"[" + b"0," * (1 << 20) + b"0]"
            return Reply(200, huge, {"Content-Type": "application/json"})
        if entity == "x_markup":
            return Reply.json(400, {"error": "[bold red]BOOM[/] [link=http://x]click[/link] "
                                    "\x1b[31mred\x1b[0m"})
        return None

    # --- transports -------------------------------------------------------------------------

    def respond(self, request: httpx.Request) -> httpx.Response:
        """Answer one httpx request in-process."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self.handle(request.method, request.url.raw_path.decode(), headers,
                            request.content)
        if reply.status == 0:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response",
                                            request=request)
        return httpx.Response(reply.status, content=reply.body, headers=reply.headers)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering in-process (give clients a /crm or /billing base)."""
        return httpx.MockTransport(self.respond)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        """A real HTTP server on loopback (not started: call serve_forever or use a thread)."""
        server = _Server((host, port), _make_handler(self.handle))
        server.daemon_threads = True
        return server


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops the connections of a worker opening a dozen at
    # once; their SYNs are retried a second later, so short client timeouts fail spuriously.
    request_queue_size = 128


def _make_handler(
    handle: Callable[[str, str, dict[str, str], bytes], Reply],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = handle(self.command, self.path, headers, body)
            if reply.status == 0:  # an outage: close the connection without an answer
                self.close_connection = True
                return
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_PUT = do_POST = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the worker logs every attempt; the mock stays quiet

    return Handler
