"""`python -m bench.pgprofile`: where a PostgreSQL drain's cost goes, per job.

The drain and fail-once runs of `python -m bench` (the same harness: `bench.cli.run_drain`,
a fresh database per run, workers started and warmed up before "go"), for SyncBridge,
pgqueuer and the bare SKIP LOCKED loop, with the server observed around the timed window:

- server CPU: the CPU time of the PostgreSQL client backends whose
  `pg_stat_activity.datname` is the run's database, minus those open before the workers
  started (the done probe and this script's own connection). A sampler thread lists them
  every 50 ms and reads each one's `/proc/<pid>/schedstat` (nanoseconds on CPU; a backend is
  one thread); a backend's time is its last reading minus its reading at "go" (0 if it
  connected later). A backend that exits mid-run loses at most its last 50 ms.
- client CPU: utime + stime of the worker processes (`/proc/<pid>/stat`, every thread,
  clock ticks) from "go" to done.
- WAL: `pg_wal_lsn_diff` of `pg_current_wal_lsn()` from "go" to the workers' exit. That is
  the whole cluster's WAL; when `pg_waldump` can read `pg_wal` (run as root or postgres),
  the records of the window are also attributed: those with a block in the run's database
  (by relation, and by record type), plus the commit records of their transactions.
- heap and index writes: `pg_stat_user_tables` (n_tup_ins, n_tup_upd, n_tup_hot_upd,
  n_tup_del) of the run's database, read before "go" (once the counters stop changing) and
  after the workers exited (backends flush their counters when they exit; read until they
  stop changing, `pg_stat_clear_snapshot()` before each read). Index entries written per job
  = the sum over each table's indexes of (inserts + non-HOT updates), an upper bound for
  partial indexes (a row outside the predicate gets no entry); the WAL gives the exact
  count of btree leaf insertions per index where pg_waldump can read it.
- write transactions per job: the COMMIT records among those transactions (pg_waldump).
  (`pg_stat_database` counts would include the done probe's polls; they are in the JSON.)
- statements per job: only with pg_stat_statements loaded (`shared_preload_libraries`,
  needs a restart); otherwise skipped, and the output says so.

Then the plans: SyncBridge's claim and completion statements, recorded as psycopg executes
them (a patched `psycopg.Cursor.execute`, while `core.leases.claim` and
`core.completion.complete` run on one connection inside a transaction rolled back
afterwards), on a fresh table holding `--explain-n` pending jobs, each replayed in a
transaction of its own (the statements before it run, then `EXPLAIN (ANALYZE, BUFFERS)`
of it, then ROLLBACK).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cli import DRAINS, NOOP, System, fresh, run_drain, systems
from bench.common import PG_ADMIN_DSN, Skip, comma_list, fresh_pg, median

PG_SYSTEMS = ("sb_pg", "pgqueuer", "bare_pg")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- /proc ------------------------------------------------------------------------------------

def backend_cpu(pid: int) -> float | None:
    """Seconds on CPU of a single-threaded process (a backend), ns resolution."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def process_cpu(pid: int) -> float | None:
    """utime + stime of a process, all its threads (clock ticks)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the statistics views -------------------------------------------------------------------

_TABLES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count,
       autoanalyze_count
FROM pg_stat_user_tables"""
_INDEXES = """
SELECT s.indexrelname, s.relname, i.indpred IS NOT NULL, s.idx_scan, s.idx_tup_read,
       io.idx_blks_hit + io.idx_blks_read
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
JOIN pg_statio_user_indexes io ON io.indexrelid = s.indexrelid"""
_DATABASE = """
SELECT xact_commit + xact_rollback, blks_hit, blks_read
FROM pg_stat_database WHERE datname = current_database()"""


def stats_snapshot(conn: Any) -> dict[str, Any]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return {
        "tables": {r[0]: list(r[1:]) for r in conn.execute(_TABLES)},
        "indexes": {r[0]: list(r[1:]) for r in conn.execute(_INDEXES)},
        "database": list(conn.execute(_DATABASE).fetchone()),
    }


def stable_stats(conn: Any, deadline: float = 5.0) -> dict[str, Any]:
    """The counters once two reads 0.2 s apart agree (backends flush theirs at most once a
    second while busy, when idle and when they exit), or the last read at the deadline."""
    end = time.monotonic() + deadline
    last = stats_snapshot(conn)
    while time.monotonic() < end:
        time.sleep(0.2)
        now = stats_snapshot(conn)
        if now["tables"] == last["tables"] and now["database"][0] == last["database"][0]:
            return now
        last = now
    return last


# --- WAL attribution (pg_waldump) -----------------------------------------------------------

_REC = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), lsn: \S+, "
                  r"prev \S+, desc: (\S+)(.*)$")
_BLK = re.compile(r"blkref #\d+: rel \d+/(\d+)/(\d+)")
_LEVEL = re.compile(r"level (\d+)")


def waldump_bin() -> str | None:
    found = shutil.which("pg_waldump")
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "pg_waldump").exists():
            return str(d / "pg_waldump")
    return None


def waldump(wal_dir: str, start: str, end: str, db_oid: int) -> dict[str, Any]:
    """The WAL records from start to end that touch the database `db_oid` (a block of one of
    its relations), plus the commit/abort records of their transactions, by relation
    filenode and by record type."""
    exe = waldump_bin()
    assert exe
    by_rel: dict[str, Counter[str]] = defaultdict(Counter)  # filenode -> bytes, records, ...
    by_type: Counter[str] = Counter()
    type_bytes: Counter[str] = Counter()
    xids: set[str] = set()
    pending_tx: list[tuple[str, str, int]] = []  # Transaction records, attributed afterwards
    others: Counter[str] = Counter()  # bytes of the records not attributed, by where
    total = ours = 0
    proc = subprocess.Popen([exe, "-p", wal_dir, "-s", start, "-e", end],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = _REC.match(line)
        if not m:
            continue
        rmgr, size_s, tx, kind, rest = m.groups()
        size = int(size_s)
        total += size
        blk = _BLK.search(rest)
        if blk is None:
            if rmgr == "Transaction":
                pending_tx.append((tx, kind, size))
            else:
                others[f"no block: {rmgr} {kind}"] += size
            continue
        if int(blk.group(1)) != db_oid:
            others[f"database {blk.group(1)}"] += size
            continue
        ours += size
        if tx != "0":
            xids.add(tx)
        if rmgr == "Btree" and kind.startswith("SPLIT"):
            lvl = _LEVEL.search(rest)
            kind = f"{kind}(leaf)" if lvl and lvl.group(1) == "0" else f"{kind}(upper)"
        label = f"{rmgr} {kind}" + (" +FPW" if "FPW" in rest else "")
        rel = by_rel[blk.group(2)]
        rel["bytes"] += size
        rel["records"] += 1
        rel[f"{rmgr} {kind}"] += 1
        by_type[label] += 1
        type_bytes[label] += size
    proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    for tx, kind, size in pending_tx:
        if tx in xids:
            ours += size
            by_type[f"Transaction {kind}"] += 1
            type_bytes[f"Transaction {kind}"] += size
        else:
            others[f"other transactions: {kind}"] += size
    return {"total_bytes": total, "db_bytes": ours, "by_filenode": by_rel,
            "by_type": dict(by_type), "type_bytes": dict(type_bytes),
            "others": dict(others.most_common(8)),
            "error": stderr.strip().splitlines()[-1] if proc.returncode and stderr else ""}


def leaf_inserts(counts: Counter[str]) -> int:
    """Index entries a btree took in (a leaf insertion, a posting-list split, or a leaf
    split carrying the new tuple)."""
    return sum(v for k, v in counts.items()
               if k in ("Btree INSERT_LEAF", "Btree INSERT_POST")
               or (k.startswith("Btree SPLIT") and k.endswith("(leaf)")))


# --- the observer -----------------------------------------------------------------------------

@dataclass
class PgObserver:
    """Samples the server around `bench.cli.run_drain`'s timed window (its DrainObserver)."""

    use_waldump: bool
    admin: Any = None
    stats: Any = None
    dbname: str = ""
    excluded: set[int] = field(default_factory=set)
    worker_pids: list[int] = field(default_factory=list)
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    autovac_pids: set[int] = field(default_factory=set)
    out: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _backends(self) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self.admin.execute(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = %s",
            (self.dbname,))]

    def _sample(self) -> None:
        for pid, kind in self._backends():
            if kind == "autovacuum worker":
                self.autovac_pids.add(pid)
            if kind != "client backend" or pid in self.excluded:
                continue
            cpu = backend_cpu(pid)
            if cpu is not None:
                self.first.setdefault(pid, 0.0)
                self.last[pid] = cpu

    def _sampler(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def before_workers(self, target: str) -> None:
        import psycopg

        self.dbname = target.rsplit("/", 1)[1]
        self.admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
        self.stats = psycopg.connect(target, autocommit=True)
        self.excluded = {pid for pid, _ in self._backends()}

    def before_go(self, worker_pids: list[int]) -> None:
        self.worker_pids = worker_pids
        self.out["stats0"] = stable_stats(self.stats)
        row = self.admin.execute(
            "SELECT pg_current_wal_lsn()::text, oid FROM pg_database WHERE datname = %s",
            (self.dbname,)).fetchone()
        self.out["lsn0"], self.out["db_oid"] = row
        for pid, kind in self._backends():
            if kind == "client backend" and pid not in self.excluded:
                cpu = backend_cpu(pid)
                if cpu is not None:
                    self.first[pid] = self.last[pid] = cpu
        self.out["client0"] = sum(process_cpu(p) or 0.0 for p in worker_pids)
        self.out["backends_at_go"] = len(self.first)
        self._thread = threading.Thread(target=self._sampler, daemon=True)
        self._thread.start()

    def at_done(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        self.out["client_cpu"] = (sum(process_cpu(p) or 0.0 for p in self.worker_pids)
                                  - self.out["client0"])
        self.out["server_cpu"] = sum(self.last[p] - self.first[p] for p in self.last)
        self.out["backends"] = len(self.last)

    def after_stop(self) -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end and any(
                k == "client backend" and p not in self.excluded for p, k in self._backends()):
            time.sleep(0.05)
        self.out["lsn1"] = self.admin.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        self.out["wal_bytes"] = int(self.admin.execute(
            "SELECT pg_wal_lsn_diff(%s, %s)", (self.out["lsn1"], self.out["lsn0"])
        ).fetchone()[0])
        self.out["stats1"] = stable_stats(self.stats)
        self.out["relfilenodes"] = {str(r[0]): r[1] for r in self.stats.execute(
            "SELECT pg_relation_filenode(oid), relname FROM pg_class "
            "WHERE pg_relation_filenode(oid) IS NOT NULL")}
        self.out["autovacuum_workers_seen"] = len(self.autovac_pids)
        if self.use_waldump:
            wal_dir = self.admin.execute("SHOW data_directory").fetchone()[0] + "/pg_wal"
            self.out["waldump"] = waldump(wal_dir, self.out["lsn0"], self.out["lsn1"],
                                          self.out["db_oid"])
        self.stats.close()
        self.admin.close()


# --- one measurement, reduced to per-job figures --------------------------------------------

def per_job(obs: dict[str, Any], jobs: int, rate: float) -> dict[str, Any]:
    s0, s1 = obs["stats0"], obs["stats1"]
    tables: dict[str, dict[str, float]] = {}
    for name, after in s1["tables"].items():
        before = s0["tables"].get(name, [0] * len(after))
        ins, upd, hot, dele, av, aa = (a - b for a, b in zip(after, before, strict=True))
        tables[name] = {"ins": ins / jobs, "upd": upd / jobs, "hot": hot / jobs,
                        "del": dele / jobs, "autovacuum": av, "autoanalyze": aa}
    wal = obs.get("waldump")
    by_name: dict[str, Counter[str]] = {}
    if wal:
        names = obs["relfilenodes"]
        for node, counts in wal["by_filenode"].items():
            by_name[names.get(node, f"filenode {node}")] = counts
    indexes: dict[str, dict[str, Any]] = {}
    for name, (table, partial, *_rest) in s1["indexes"].items():
        t = tables.get(table, {})
        entry = {"table": table, "partial": partial,
                 "entries": t.get("ins", 0) + t.get("upd", 0) - t.get("hot", 0)}
        if name in by_name:
            entry["leaf_inserts"] = leaf_inserts(by_name[name]) / jobs
            entry["wal_bytes"] = by_name[name]["bytes"] / jobs
        indexes[name] = entry
    for name, t in tables.items():
        if name in by_name:
            t["wal_bytes"] = by_name[name]["bytes"] / jobs
    heap = {k: sum(t[k] for t in tables.values()) for k in ("ins", "upd", "hot", "del")}
    out: dict[str, Any] = {
        "jobs": jobs, "jobs_per_s": rate,
        "server_cpu_us": obs["server_cpu"] / jobs * 1e6,
        "client_cpu_us": obs["client_cpu"] / jobs * 1e6,
        "wal_bytes": obs["wal_bytes"] / jobs,
        # Every transaction of the database, the done probe's 5 ms polls included.
        "db_xacts": (s1["database"][0] - s0["database"][0]) / jobs,
        "heap": heap, "index_entries": sum(i["entries"] for i in indexes.values()),
        "tables": tables, "indexes": indexes, "backends": obs["backends"],
        "autovacuum_workers_seen": obs["autovacuum_workers_seen"],
    }
    if wal:
        out["wal_db_bytes"] = wal["db_bytes"] / jobs
        out["wal_other_bytes"] = (obs["wal_bytes"] - wal["db_bytes"]) / jobs
        out["leaf_inserts"] = sum(i.get("leaf_inserts", 0) for i in indexes.values())
        out["commits"] = wal["by_type"].get("Transaction COMMIT", 0) / jobs
        out["wal_types"] = {k: [v / jobs, wal["type_bytes"][k] / jobs]
                            for k, v in wal["by_type"].items()}
        out["wal_others"] = {k: v / jobs for k, v in wal["others"].items()}
        out["waldump_error"] = wal["error"]
    return out


def measure(system: System, workload: str, n: int, use_waldump: bool,
            tmp: Path) -> dict[str, Any]:
    mod = importlib.import_module(system.module)
    jobs, job_type, attempts = DRAINS[workload](n)
    obs = PgObserver(use_waldump)
    with fresh(system, tmp) as target:
        rate = run_drain(system, mod, target, jobs, job_type, attempts, observer=obs)
    return per_job(obs.out, jobs, rate)


# --- medians and tables -----------------------------------------------------------------------

def med(samples: list[dict[str, Any]], *path: str) -> float | None:
    vals = []
    for s in samples:
        v: Any = s
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            vals.append(float(v))
    return median(vals) if vals else None


def f(v: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def summary(results: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> str:
    out = ["| system | workload | jobs/s | server CPU µs/job | client CPU µs/job "
           "| WAL B/job (cluster) | WAL B/job (this db) | write xacts/job (WAL) "
           "| heap ins / upd (HOT %) / del per job | index entries/job (stats, upper bound) "
           "| btree leaf inserts/job (WAL) |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key, samples in results.items():
        if not samples:
            continue
        sys_key, workload = key.split(":")
        upd = med(samples, "heap", "upd")
        hot = med(samples, "heap", "hot")
        hot_pct = f"{100 * hot / upd:.0f} %" if upd and hot is not None else "-"
        out.append(
            f"| {labels[sys_key]} | {workload} | {f(med(samples, 'jobs_per_s'), '{:,.0f}')} "
            f"| {f(med(samples, 'server_cpu_us'))} | {f(med(samples, 'client_cpu_us'))} "
            f"| {f(med(samples, 'wal_bytes'), '{:,.0f}')} "
            f"| {f(med(samples, 'wal_db_bytes'), '{:,.0f}')} "
            f"| {f(med(samples, 'commits'), '{:.4f}')} "
            f"| {f(med(samples, 'heap', 'ins'), '{:.2f}')} / {f(upd, '{:.2f}')} ({hot_pct}) "
            f"/ {f(med(samples, 'heap', 'del'), '{:.2f}')} "
            f"| {f(med(samples, 'index_entries'), '{:.2f}')} "
            f"| {f(med(samples, 'leaf_inserts'), '{:.2f}')} |")
    return "\n".join(out)


def breakdown(key: str, label: str, samples: list[dict[str, Any]]) -> str:
    last = samples[-1]
    out = [f"\n#### {label}, {key.split(':')[1]}: by relation (per job, median of "
           f"{len(samples)})\n",
           "| relation | ins | upd | HOT upd | del | index entries (stats) | btree leaf "
           "inserts (WAL) | WAL bytes |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name in sorted(last["tables"]):
        t = ("tables", name)
        if not any(med(samples, *t, k) for k in ("ins", "upd", "del", "wal_bytes")):
            continue
        out.append(f"| {name} (table) | {f(med(samples, *t, 'ins'), '{:.2f}')} "
                   f"| {f(med(samples, *t, 'upd'), '{:.2f}')} "
                   f"| {f(med(samples, *t, 'hot'), '{:.2f}')} "
                   f"| {f(med(samples, *t, 'del'), '{:.2f}')} | | "
                   f"| {f(med(samples, *t, 'wal_bytes'), '{:,.0f}')} |")
        for iname, idx in sorted(last["indexes"].items()):
            if idx["table"] != name:
                continue
            i = ("indexes", iname)
            part = " (partial: upper bound)" if idx["partial"] else ""
            out.append(f"| &nbsp; {iname}{part} | | | | "
                       f"| {f(med(samples, *i, 'entries'), '{:.2f}')} "
                       f"| {f(med(samples, *i, 'leaf_inserts'), '{:.2f}')} "
                       f"| {f(med(samples, *i, 'wal_bytes'), '{:,.0f}')} |")
    if "wal_types" in last:
        out.append("\nWAL records of this database by type (per job: records, bytes; last run): "
                   + "; ".join(f"{k} {v[0]:.2f}, {v[1]:,.0f} B" for k, v in sorted(
                       last["wal_types"].items(), key=lambda kv: -kv[1][1]) if v[1] >= 1))
    if last.get("wal_others"):
        out.append("\nWAL of the window not from this database (per job, last run; the "
                   "cluster-wide figure includes it): " + "; ".join(
                       f"{k} {v:,.0f} B" for k, v in last["wal_others"].items()))
    av = [s["autovacuum_workers_seen"] for s in samples]
    if any(av):
        out.append(f"\nAutovacuum workers seen on the database during the runs: {av}.")
    return "\n".join(out)


# --- the plans --------------------------------------------------------------------------------

@dataclass
class Recorded:
    label: str
    query: str
    params: Any
    binary: bool | None
    many: bool = False


@contextlib.contextmanager
def recording(into: list[Recorded], label: list[str]) -> Iterator[None]:
    """Every statement psycopg executes (cursor.execute / executemany), with its parameters."""
    import psycopg

    orig_exec, orig_many = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def text(q: Any, cur: Any) -> str:
        return q if isinstance(q, str) else q.as_string(cur)

    def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        into.append(Recorded(label[0], text(query, self), params, kw.get("binary")))
        return orig_exec(self, query, params, **kw)

    def executemany(self: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
        params_seq = list(params_seq)
        into.append(Recorded(label[0], text(query, self), params_seq, None, many=True))
        return orig_many(self, query, params_seq, **kw)

    psycopg.Cursor.execute, psycopg.Cursor.executemany = execute, executemany  # type: ignore
    try:
        yield
    finally:
        psycopg.Cursor.execute, psycopg.Cursor.executemany = orig_exec, orig_many  # type: ignore


_NOT_PLANNED = ("SET", "SAVEPOINT", "RELEASE", "BEGIN", "COMMIT", "ROLLBACK", "SHOW", "LISTEN",
                "SELECT PG_NOTIFY", "NOTIFY")


def record_sb_batch(dsn: str, batch: int) -> list[Recorded]:
    """The statements of one SyncBridge claim of `batch` jobs and of their completion batch,
    run through core's own functions on one connection, in a transaction rolled back."""
    import bench.sb as sb
    import core.completion
    import core.leases
    from core.records import Completion

    db = sb._open(dsn)
    recorded: list[Recorded] = []
    label = ["claim"]
    try:
        with db.engine.connect() as conn:
            trans = conn.begin()

            @contextlib.contextmanager
            def same_transaction() -> Iterator[Any]:
                yield conn

            db.write = same_transaction  # type: ignore[method-assign]
            with recording(recorded, label):
                jobs = core.leases.claim(db, "pgprofile", batch, lease_seconds=30,
                                         job_types=[NOOP])
                label[0] = "completion"
                now = time.time()
                core.completion.complete(db, [
                    Completion(job_id=j.id, lease_token=j.lease_token, worker_id="pgprofile",
                               outcome="success", started_at=now, finished_at=now + 0.001,
                               duration_ms=1.0) for j in jobs])
            trans.rollback()
    finally:
        db.dispose()
    if not jobs:
        raise RuntimeError("the recorded claim claimed nothing")
    return recorded


def explain_sb(n_pending: int, batch: int, runs: int) -> str:
    import psycopg

    import bench.sb as sb

    out = []
    with fresh_pg("sb_explain") as dsn:
        sb.prepare(dsn)
        sb.enqueue(dsn, NOOP, n_pending)
        time.sleep(0.01)  # the claim's `now` after every job's next_run_at
        recorded = record_sb_batch(dsn, batch)
        with psycopg.connect(dsn) as conn:
            counts = conn.execute("SELECT status, count(*) FROM sync_jobs GROUP BY 1 "
                                  "ORDER BY 1").fetchall()
            analyzed = conn.execute("SELECT last_autoanalyze IS NOT NULL OR last_analyze IS "
                                    "NOT NULL FROM pg_stat_user_tables WHERE relname = "
                                    "'sync_jobs'").fetchone()[0]
            out.append(f"Table: sync_jobs {dict(counts)} (statistics analyzed: "
                       f"{'yes' if analyzed else 'no'}); claim of {batch} jobs, then their "
                       f"completion batch ({batch} successes).\n")
            idx = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                               "('sync_jobs', 'sync_job_attempts') ORDER BY tablename, "
                               "indexname").fetchall()
            out.append("Indexes:\n\n" + "\n".join(f"- `{d}`" for _, d in idx) + "\n")
            for i, rec in enumerate(recorded):
                if rec.many or rec.query.lstrip().upper().startswith(_NOT_PLANNED):
                    continue
                conn.rollback()
                times = []
                for _ in range(runs):
                    with conn.transaction(force_rollback=True):
                        for prior in recorded[:i]:
                            if prior.many:
                                with conn.cursor() as cur:
                                    cur.executemany(prior.query, prior.params)
                            else:
                                conn.execute(prior.query, prior.params, binary=prior.binary)
                        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + rec.query,
                                            rec.params, binary=rec.binary).fetchall()
                    times += [r[0].split(":")[1].strip() for r in plan
                              if r[0].startswith("Execution Time")]
                before = [p.query.strip() for p in recorded[:i] if p.label == rec.label]
                sql = textwrap.dedent(rec.query).strip()
                out.append(f"### {rec.label} (statement {i + 1} of {len(recorded)})\n")
                if before:
                    out.append("Preceded in its transaction by: "
                               + "; ".join(f"`{b}`" for b in before) + "\n")
                out.append("```sql\n" + sql + "\n```\n")
                out.append(f"Execution time of {runs} runs (each rolled back): "
                           f"{', '.join(times)}; the plan of the last:\n")
                out.append("```\n" + "\n".join(r[0] for r in plan) + "\n```\n")
        with psycopg.connect(dsn) as conn:
            left = conn.execute("SELECT count(*) FROM sync_jobs WHERE status = 'pending'"
                                ).fetchone()[0]
        if left != n_pending:
            raise RuntimeError(f"the plans changed the data: {left} pending")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------

def pg_stat_statements_note() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        avail = conn.execute("SELECT count(*) FROM pg_available_extensions "
                             "WHERE name = 'pg_stat_statements'").fetchone()[0]
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    if avail and "pg_stat_statements" in preload:
        return ("pg_stat_statements is loaded, but this script does not read it yet: "
                "statements per job skipped.")
    return ("Statements per job: skipped (pg_stat_statements is "
            + ("installed but not in shared_preload_libraries, which needs a server restart"
               if avail else "not installed") + "); write transactions per job are shown "
            "instead (from the WAL).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pgprofile",
                                description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20_000, help="no-op jobs per drain (default 20000; "
                   "fail-once runs N/10)")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement (medians)")
    p.add_argument("--systems", default=",".join(PG_SYSTEMS),
                   help="comma-separated: " + ",".join(PG_SYSTEMS))
    p.add_argument("--workloads", default="drain,fail_once", help="drain,fail_once")
    p.add_argument("--no-waldump", action="store_true",
                   help="skip the per-relation WAL attribution (pg_waldump)")
    p.add_argument("--explain-n", type=int, default=20_000,
                   help="pending jobs under the plans (default 20000; 0: no plans)")
    p.add_argument("--explain-batch", type=int, default=256,
                   help="jobs per claim in the plans (default 256, the bench's concurrency)")
    p.add_argument("--explain-runs", type=int, default=3,
                   help="EXPLAIN ANALYZE runs per statement, the last one's plan printed")
    p.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keys = comma_list(args.systems, PG_SYSTEMS, "system")
    workloads = comma_list(args.workloads, DRAINS, "workload")
    chosen = [s for s in systems() if s.key in keys]
    labels = {s.key: s.label for s in chosen}
    for s in chosen:
        try:
            mod = importlib.import_module(s.module)
            if hasattr(mod, "available"):
                mod.available()
        except Skip as exc:
            s.skip = str(exc)
            log(f"skipping {s.label}: {exc}")
    use_waldump = not args.no_waldump and waldump_bin() is not None
    if use_waldump:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as c:
            wal_dir = c.execute("SHOW data_directory").fetchone()[0] + "/pg_wal"
        use_waldump = os.access(wal_dir, os.R_OK | os.X_OK)
    if not use_waldump:
        log("pg_waldump unavailable or pg_wal unreadable: no per-relation WAL attribution")
    results: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="syncbridge-pgprofile-") as tmp:
        for rep in range(args.repeat):
            log(f"run {rep + 1}/{args.repeat}")
            for w in workloads:
                for s in chosen:
                    if s.skip or w not in s.workloads:
                        continue
                    key = f"{s.key}:{w}"
                    try:
                        r = measure(s, w, args.n, use_waldump, Path(tmp))
                    except Exception as exc:  # one failing system must not sink the table
                        errors.append(f"{key}: {type(exc).__name__}: {exc}")
                        log(f"  ! {key}: {exc}")
                        continue
                    results.setdefault(key, []).append(r)
                    log(f"  {key}: {r['jobs_per_s']:,.0f} jobs/s, server "
                        f"{r['server_cpu_us']:.1f} µs/job, client {r['client_cpu_us']:.1f} "
                        f"µs/job, WAL {r['wal_bytes']:,.0f} B/job")
    plans = ""
    if args.explain_n and "sb_pg" in keys:
        log("plans")
        try:
            plans = explain_sb(args.explain_n, args.explain_batch, args.explain_runs)
        except Exception as exc:
            errors.append(f"plans: {type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - start
    out = [f"N = {args.n:,} no-op jobs (drain), {max(1, args.n // 10):,} fail-once jobs; "
           f"{args.repeat} run(s) each (medians); {elapsed:.0f} s in all.\n",
           summary(results, labels), "", pg_stat_statements_note()]
    if not use_waldump:
        out.append("No pg_waldump attribution (unavailable or pg_wal unreadable).")
    for key, samples in results.items():
        out.append(breakdown(key, labels[key.split(":")[0]], samples))
    if plans:
        out.append("\n## SyncBridge's statements, EXPLAIN (ANALYZE, BUFFERS)\n")
        out.append(plans)
    if errors:
        out.append("\nErrors (left out of the medians):\n" + "\n".join(f"- {e}" for e in errors))
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results,
                                               "errors": errors, "plans": plans},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
