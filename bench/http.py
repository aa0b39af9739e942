"""`python -m bench.http`: enqueue over HTTP beside the direct Python enqueue, and the
`/metrics` scrape at a million jobs.

Per backend (fresh SQLite file / fresh PostgreSQL database), in one run:

- direct: `core.enqueue.enqueue` one job per call (calls/s, p50/p95 per call) and
  `core.enqueue.enqueue_many` in batches of --batch (jobs/s, p50/p95 per batch);
- HTTP: a real `syncbridge serve` process on 127.0.0.1, one httpx client with keep-alive:
  `POST /api/jobs/{type}` one job per request, and `POST /api/jobs/{type}/bulk` with --batch
  ids per request (same figures);
- scrape: the database seeded with --rows jobs (bench.console.seed: every status, attempt
  rows), then `GET /metrics`: the first scrape (computes the snapshot), then the median and
  p95 of 20 scrapes served from the snapshot, the snapshot's own cost (the
  syncbridge_metrics_snapshot_duration_seconds gauge) and `core.metrics.collect` alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, fresh_pg, fresh_sqlite, median, percentile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def database(backend: str, tmp: Path, prefix: str) -> Iterator[str]:
    if backend == "sqlite":
        with fresh_sqlite(tmp, prefix) as path:
            yield f"sqlite:///{path}"
    else:
        with fresh_pg(prefix) as dsn:
            yield dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def serve(url: str, refresh: float = 10.0) -> Iterator[httpx.Client]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["SYNCBRIDGE_API_METRICS_REFRESH_SECONDS"] = str(refresh)
    proc = subprocess.Popen([sys.executable, "-m", "syncbridge_tui", "serve", "--port",
                             str(port), "--db", url], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not answer /healthz within 60 s")
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


def _timed(fn: Callable[[int], Any], n: int) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
    return samples


def _row(what: str, unit: str, per_call: int, samples: list[float]) -> dict[str, Any]:
    total = sum(samples)
    return {"what": what, "unit": unit, "rate": per_call * len(samples) / total,
            "p50": median(samples) * 1000, "p95": percentile(samples, 0.95) * 1000}


def enqueue_rows(backend: str, tmp: Path, n: int, batches: int, batch: int
                 ) -> list[dict[str, Any]]:
    from core import enqueue
    from core.config import load_settings
    from core.runtime import open_database

    rows = []
    with database(backend, tmp, "http") as url:
        db = open_database(load_settings(database_url=url))
        known = ["customer", "invoice"]
        try:
            rows.append(_row("direct enqueue (1 per call)", "calls/s", 1, _timed(
                lambda i: enqueue.enqueue(db, "customer", f"d_{i}", known_types=known,
                                        max_attempts=4), n)))
            rows.append(_row(f"direct enqueue_many ({batch} per call)", "jobs/s", batch, _timed(
                lambda i: enqueue.enqueue_many(db, "invoice", [f"d_{i}_{k}" for k in range(batch)],
                                             known_types=known, max_attempts=4), batches)))
        finally:
            db.dispose()
        with serve(url) as client:
            for i in range(20):  # warm the connection and the server's code paths
                client.post("/api/jobs/customer", json={"entity_id": f"w_{i}"})

            def one(i: int) -> None:
                r = client.post("/api/jobs/customer", json={"entity_id": f"h_{i}"})
                assert r.status_code == 201, r.text

            def many(i: int) -> None:
                r = client.post("/api/jobs/invoice/bulk",
                                json={"entity_ids": [f"h_{i}_{k}" for k in range(batch)]})
                assert r.status_code == 200 and r.json()["created"] == batch, r.text[:200]

            rows.append(_row("HTTP POST /api/jobs/{type} (1 per request)", "requests/s", 1,
                             _timed(one, n)))
            rows.append(_row(f"HTTP POST /api/jobs/{{type}}/bulk ({batch} per request)",
                             "jobs/s", batch, _timed(many, batches)))
    return rows


def scrape_rows(backend: str, tmp: Path, jobs: int) -> dict[str, float]:
    from bench.console import seed
    from core import metrics
    from core.config import load_settings
    from core.runtime import open_database

    with database(backend, tmp, "scrape") as url:
        db = open_database(load_settings(database_url=url))
        try:
            seeded = seed(db, jobs, pending=min(10_000, jobs // 10))
            t0 = time.perf_counter()
            metrics.collect(db)
            collect_ms = (time.perf_counter() - t0) * 1000
        finally:
            db.dispose()
        with serve(url, refresh=10.0) as client:
            t0 = time.perf_counter()
            first = client.get("/metrics")
            first_ms = (time.perf_counter() - t0) * 1000
            assert first.status_code == 200
            samples = []
            for _ in range(20):
                t0 = time.perf_counter()
                r = client.get("/metrics")
                samples.append(time.perf_counter() - t0)
                assert r.status_code == 200
            snap = next(float(line.split()[-1]) for line in r.text.splitlines()
                        if line.startswith("syncbridge_metrics_snapshot_duration_seconds "))
    return {"seed_s": seeded, "collect_ms": collect_ms, "first_ms": first_ms,
            "p50": median(samples) * 1000, "p95": percentile(samples, 0.95) * 1000,
            "snapshot_ms": snap * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--n", type=int, default=1000, help="single enqueues per method")
    p.add_argument("--batch", type=int, default=1000, help="ids per bulk request / call")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--rows", type=int, default=1_000_000, help="jobs seeded for the scrape")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    for backend in args.backends.split(","):
        rows = enqueue_rows(backend, tmp, args.n, args.batches, args.batch)
        print(f"\n{backend}: enqueue, {args.n} single / {args.batches} x {args.batch} bulk")
        print(f"| {'method':<50} | {'rate':>19} | {'p50 ms':>8} | {'p95 ms':>8} |")
        print(f"|{'-' * 52}|{'-' * 20}:|{'-' * 9}:|{'-' * 9}:|")
        for r in rows:
            rate = f"{r['rate']:,.0f} {r['unit']}"
            print(f"| {r['what']:<50} | {rate:>19} | {r['p50']:>8.2f} | {r['p95']:>8.2f} |")
        s = scrape_rows(backend, tmp, args.rows)
        print(f"\n{backend}: /metrics at {args.rows:,} jobs (seeded in {s['seed_s']:.1f} s)")
        print(f"| first scrape (computes the snapshot) | {s['first_ms']:.0f} ms |")
        print(f"| scrape from the snapshot, p50 / p95 | {s['p50']:.2f} / {s['p95']:.2f} ms |")
        print(f"| background snapshot (every refresh) | {s['snapshot_ms']:.0f} ms |")
        print(f"| core.metrics.collect alone | {s['collect_ms']:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
