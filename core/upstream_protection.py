"""Protect the upstreams: fleet-wide limits, Retry-After as a shared pause, circuit breakers.

The fleet shares one row per named upstream in `sync_upstreams` (core.models.SyncUpstream).
A worker consults it BEFORE it claims (`Protection.claim`, in the claim's own write
transaction), so a job whose upstream is paused, open or at its limit stays `pending`: no
attempt is opened and no budget is spent. A job type that calls several upstreams is held
back by any of them.

Admission, per claim (one transaction, the claim's own):
  1. The rows of the upstreams this worker's job types call, as read at most `STATE_TTL`
     seconds ago (else read again, unlocked). When none is paused, open, limited or
     adaptive, the claim is the plain `leases.claim`.
  2. Drop the types whose upstream is paused (`paused_until`), open, or half-open with its
     probe out. An open breaker whose cool-down has passed (or a half-open one whose probe
     lease expired) gives exactly one probe: the worker that wins the conditional UPDATE of
     the row claims one job for it and holds the probe lease.
  3. Estimate each limited upstream's budget: its token bucket as last read (rate limit)
     and the room under its max in flight (counted only when the last settle left little).
  4. Claim, in `next_run_at` order, per group of types sharing the same limited upstreams,
     at most the group's budget; then the unlimited types with what is left.
  5. Settle, per limited upstream in name order: one `UPDATE … RETURNING` refills the
     bucket, takes the tokens claimed and locks the row until the commit; the running jobs
     are counted after the lock (every claim that locked it first is committed by then);
     claims beyond either limit are unclaimed in this same transaction (nobody saw them)
     and their tokens given back. The rows are locked only from the settle to the commit.

After each batch of completions the worker reports what its attempts saw
(`Protection.record`): a retryable failure (timeout, connection error, 5xx) counts toward
the breaker (N consecutive within the window open it); a 429, or a 503 with Retry-After,
pauses the upstream until then and, without a configured rate, cuts its adaptive rate
(multiplicative decrease; successes add back slowly); the probe's result closes the breaker
or reopens it with a doubled cool-down (capped). Successes write nothing while everything
is closed and unlimited, so the unprotected hot path stays as it was.

`states(db)` and `hold_reasons(db, jobs)` are the reads the faces use; `pause`, `resume`,
`reset` and `open_breaker` the operator's controls (audited).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, func, select, text, update

from core import clock, leases
from core.config import Settings, SettingsError
from core.db import Database, raw_connection
from core.errors import InvalidInput
from core.logging import get_logger
from core.models import audit_t, jobs_t, upstreams_t
from core.records import ClaimedJob
from core.statuses import JobStatus

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_TTL = 0.1  # seconds a worker may reuse the rows it read when nothing is limited
BURST_SECONDS = 0.25  # a token bucket holds this many seconds' worth of its rate
AIMD_DECREASE = 0.7  # a 429 multiplies the adaptive rate by this
AIMD_INCREASE = 0.05  # per second without a 429, the adaptive rate grows by this fraction
AIMD_MIN_RATE = 1.0
RECENT_SECONDS = 60.0  # the 429/5xx counters cover about this long
NO_RETRY_AFTER_PAUSE = 1.0  # a 429 without a usable Retry-After pauses this long

# The demo app's job types and the upstreams they call, until the app declares them (issue
# 10: `@job_type(..., upstreams=(...))`); `type_upstreams` prefers the app's declaration.
DEMO_UPSTREAMS: dict[str, tuple[str, ...]] = {"customer": ("crm", "billing"),
                                              "invoice": ("crm", "billing")}

Signal = Literal["ok", "alive", "failure", "rate_limited", "neutral"]


# --- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Limit:
    rate: float | None = None  # jobs admitted per second, fleet-wide
    max_in_flight: int | None = None  # running jobs calling it, fleet-wide


@dataclass(frozen=True, slots=True)
class Policy:
    enabled: bool = True
    limits: Mapping[str, Limit] = field(default_factory=dict)
    breaker_failures: int = 5
    window_seconds: float = 30.0
    cooldown_seconds: float = 5.0
    cooldown_max_seconds: float = 60.0
    probe_lease_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None,
                      app_limits: Mapping[str, Limit] | None = None) -> Policy:
        return cls(enabled=settings.upstream_protection,
                   limits=limits_from(settings, environ, app_limits),
                   breaker_failures=settings.breaker_failures,
                   window_seconds=settings.breaker_window_seconds,
                   cooldown_seconds=settings.breaker_cooldown_seconds,
                   cooldown_max_seconds=max(settings.breaker_cooldown_max_seconds,
                                            settings.breaker_cooldown_seconds),
                   probe_lease_seconds=settings.lease_seconds)


def _number(value: Any, what: str, integer: bool) -> float | int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"bad setting {what}: not a number: {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"bad setting {what}: must be more than 0")
    return number


def limits_from(settings: Settings, environ: Mapping[str, str] | None = None,
                app_limits: Mapping[str, Limit] | None = None) -> dict[str, Limit]:
    """Limits by upstream: the app's, then SYNCBRIDGE_UPSTREAM_LIMITS (JSON), then
    SYNCBRIDGE_UPSTREAM_<NAME>_RATE / _MAX_IN_FLIGHT (later wins, field by field)."""
    found: dict[str, dict[str, Any]] = {}
    for name, lim in (app_limits or {}).items():
        found.setdefault(name, {}).update(rate=lim.rate, max_in_flight=lim.max_in_flight)
    if settings.upstream_limits:
        try:
            data = json.loads(settings.upstream_limits)
        except ValueError:
            raise SettingsError("bad setting SYNCBRIDGE_UPSTREAM_LIMITS: not JSON") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise SettingsError('bad setting SYNCBRIDGE_UPSTREAM_LIMITS: expected '
                                '{"name": {"rate": N, "max_in_flight": N}}')
        for name, spec in data.items():
            unknown = set(spec) - {"rate", "max_in_flight"}
            if unknown:
                raise SettingsError(f"bad setting SYNCBRIDGE_UPSTREAM_LIMITS: {name}: unknown "
                                    f"key {sorted(unknown)[0]!r}")
            found.setdefault(name, {}).update(spec)
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if not key.startswith("SYNCBRIDGE_UPSTREAM_") or key == "SYNCBRIDGE_UPSTREAM_LIMITS":
            continue
        rest = key[len("SYNCBRIDGE_UPSTREAM_"):]
        for suffix, attr in (("_MAX_IN_FLIGHT", "max_in_flight"), ("_RATE", "rate")):
            if rest.endswith(suffix) and len(rest) > len(suffix):
                found.setdefault(rest[: -len(suffix)].lower(), {})[attr] = value
                break
    limits = {}
    for name, spec in found.items():
        where = f"SYNCBRIDGE_UPSTREAM_{name.upper()}"
        rate = _number(spec.get("rate"), f"{where}_RATE", False)
        mif = _number(spec.get("max_in_flight"), f"{where}_MAX_IN_FLIGHT", True)
        if rate is not None or mif is not None:
            limits[name] = Limit(None if rate is None else float(rate),
                                 None if mif is None else int(mif))
    return limits


def type_upstreams(registry: Any = None,
                   mapping: Mapping[str, Sequence[str]] | None = None
                   ) -> dict[str, tuple[str, ...]]:
    """Job type -> the upstreams it calls: an explicit mapping, else the app's declarations
    (`registry.spec(name).upstreams`, issue 10), else the demo's."""
    if mapping is not None:
        return {t: tuple(ups) for t, ups in mapping.items()}
    spec = getattr(registry, "spec", None)
    if registry is not None and callable(spec):
        out = {}
        for name in registry.names():
            declared = getattr(spec(name), "upstreams", ())
            out[name] = tuple(declared)
        return out
    return dict(DEMO_UPSTREAMS)


# --- the rows -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Row:
    name: str
    state: str = CLOSED
    paused_until: float | None = None
    failures: int = 0
    failures_since: float | None = None
    opened_at: float | None = None
    cooldown_seconds: float = 0.0
    next_probe_at: float | None = None
    probe_owner: str | None = None
    probe_job_id: int | None = None
    probe_expires_at: float | None = None
    tokens: float | None = None
    tokens_at: float | None = None
    rate: float | None = None
    recent_429: int = 0
    recent_5xx: int = 0
    recent_since: float = 0.0
    updated_at: float = 0.0
    job_types: str | None = None  # comma-separated, as the workers declared them

    def paused(self, now: float) -> bool:
        return self.paused_until is not None and self.paused_until > now

    def probe_due(self, now: float) -> bool:
        """An open breaker past its cool-down, or a half-open one whose probe was lost."""
        if self.state == OPEN:
            return self.next_probe_at is None or self.next_probe_at <= now
        if self.state == HALF_OPEN:
            return self.probe_expires_at is None or self.probe_expires_at <= now
        return False


_COLUMNS = [c.name for c in upstreams_t.columns]


def _row(r: Any) -> Row:
    return Row(**{k: r._mapping[k] for k in _COLUMNS})


def ensure_rows(db: Database, names: Iterable[str], cooldown: float = 5.0,
                by_type: Mapping[str, Sequence[str]] | None = None) -> None:
    """Insert the closed row of every upstream that has none yet, and record which job
    types call it (`by_type`, added to what other workers recorded), so the reads
    (`states`, `hold_reasons`) need no app."""
    names = sorted(set(names))
    if not names:
        return
    calling = {n: {t for t, ups in (by_type or {}).items() if n in ups} for n in names}
    now = clock.now()
    with db.write() as conn:
        have = {r.name: r.job_types for r in conn.execute(
            select(upstreams_t.c.name, upstreams_t.c.job_types)
            .where(upstreams_t.c.name.in_(names)))}
        for name in names:
            if name in have:
                known = set(filter(None, (have[name] or "").split(",")))
                if not calling[name] <= known:
                    _set(conn, name, job_types=",".join(sorted(known | calling[name])))
        rows = [dict(name=n, state=CLOSED, failures=0, cooldown_seconds=cooldown,
                     recent_429=0, recent_5xx=0, recent_since=now, updated_at=now,
                     job_types=",".join(sorted(calling[n])) or None)
                for n in names if n not in have]
        if not rows:
            return
        if db.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(upstreams_t).on_conflict_do_nothing(), rows)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(upstreams_t).on_conflict_do_nothing(), rows)


def recorded_type_upstreams(rows: Iterable[Row]) -> dict[str, tuple[str, ...]]:
    """Job type -> upstreams, from what the workers recorded in the rows."""
    out: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r.name):
        for t in filter(None, (row.job_types or "").split(",")):
            out.setdefault(t, []).append(row.name)
    return {t: tuple(ups) for t, ups in out.items()}


def fleet_type_upstreams(db: Database, declared: Mapping[str, Sequence[str]] | None = None
                         ) -> dict[str, tuple[str, ...]]:
    """Job type -> upstreams: what the fleet's workers recorded, with the app's declarations
    (`declared`) added, so a face shows an app's upstreams before any worker ran and the
    types of other apps on the same database too (a read of the few upstream rows)."""
    with db.read() as conn:
        recorded = recorded_type_upstreams(
            Row(name, job_types=types) for name, types in conn.execute(
                select(upstreams_t.c.name, upstreams_t.c.job_types)))
    out = {t: list(ups) for t, ups in recorded.items()}
    for t, ups in (declared or {}).items():
        have = out.setdefault(t, [])
        have += [u for u in ups if u not in have]
    return {t: tuple(ups) for t, ups in out.items() if ups}


def _read_rows(conn: Connection, names: Sequence[str], lock: bool,
               is_postgres: bool) -> dict[str, Row]:
    q = select(upstreams_t).where(upstreams_t.c.name.in_(list(names)))
    if lock and is_postgres:
        q = q.order_by(upstreams_t.c.name).with_for_update()
    return {r.name: _row(r) for r in conn.execute(q)}


def _soft(conn: Connection) -> None:
    """PostgreSQL: this transaction's commit does not wait for its WAL flush. The upstream
    rows are soft state (tokens, counters, the breaker): a database crash may forget the
    last few milliseconds of it, which costs at most a token or a failure count, while
    waiting for the flush doubled the cost of every claim with a limit configured."""
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


_TAKE_SQL = {  # driver SQL: a fixed, prepared statement on the claim's hot path
    True: "UPDATE sync_upstreams SET tokens = LEAST(%(cap)s, COALESCE(tokens, %(cap)s) "
          "+ GREATEST(0, %(now)s - COALESCE(tokens_at, %(now)s)) * %(rate)s) - %(n)s, "
          "tokens_at = %(now)s, updated_at = %(now)s WHERE name = %(name)s RETURNING tokens",
    False: "UPDATE sync_upstreams SET tokens = min(:cap, COALESCE(tokens, :cap) "
           "+ max(0, :now - COALESCE(tokens_at, :now)) * :rate) - :n, "
           "tokens_at = :now, updated_at = :now WHERE name = :name RETURNING tokens",
}
_RUNNING_SQL = ("SELECT job_type, count(*) FROM sync_jobs WHERE status = 'running' "
                "GROUP BY job_type")


def _take_tokens(conn: Connection, name: str, n: int, rate: float, now: float,
                 is_postgres: bool) -> float:
    """Refill upstream `name`'s bucket to `now` and take `n` tokens in one statement (its
    row stays locked until the commit); returns what is left, negative when `n` was more
    than the bucket held."""
    cap = max(1.0, rate * BURST_SECONDS)
    row = raw_connection(conn).execute(_TAKE_SQL[is_postgres], {
        "cap": cap, "now": now, "rate": rate, "n": n, "name": name}).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0


def _running_by_type(conn: Connection) -> dict[str, int]:
    """Running jobs by type. By status alone: running jobs are few (the fleet's concurrency)
    and the (status, id) index finds them; a filter on the type could make the planner
    walk every job of the type instead."""
    return {str(t): int(n) for t, n in raw_connection(conn).execute(_RUNNING_SQL).fetchall()}


def _unclaim(conn: Connection, worker_id: str, jobs: Sequence[ClaimedJob], now: float) -> None:
    """Undo claims made earlier in this same transaction (no one saw them): the job is
    pending again with its token and budget as before the claim."""
    if not jobs:
        return
    conn.execute(
        update(jobs_t)
        .where(jobs_t.c.id.in_([j.id for j in jobs]), jobs_t.c.lease_owner == worker_id,
               jobs_t.c.status == JobStatus.RUNNING)
        .values(status=JobStatus.PENDING, lease_owner=None,
                lease_token=jobs_t.c.lease_token - 1,
                attempt_count=jobs_t.c.attempt_count - 1, lease_acquired_at=None,
                lease_expires_at=None, updated_at=now))


def _set(conn: Connection, name: str, **values: Any) -> None:
    conn.execute(update(upstreams_t).where(upstreams_t.c.name == name)
                 .values(updated_at=clock.now(), **values))


def _event(event: str, upstream: str, **fields: Any) -> None:
    """Every state change is a structured log event (the logger as configured now)."""
    get_logger().warning(event, upstream=upstream, **fields)


# --- admission (the worker's claim) -------------------------------------------------------------

@dataclass(slots=True)
class _Plan:
    """One claim's admission: what is blocked, the probes due, the types admitted, the
    budget of each limited upstream and its token bucket (available, capacity)."""

    limit: int
    unguarded: list[str]
    guarded: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    probe_due: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)
    budgets: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    used: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(slots=True)
class Observation:
    """What one finished attempt says about an upstream."""

    upstream: str
    signal: Signal
    job_id: int
    retry_after: float | None = None


class Protection:
    """One worker's side of the fleet's shared protection state."""

    def __init__(self, db: Database, policy: Policy,
                 upstreams_by_type: Mapping[str, Sequence[str]], worker_id: str) -> None:
        self.db = db
        self.policy = policy
        self.by_type = {t: tuple(u) for t, u in upstreams_by_type.items() if u}
        self.names = sorted({u for ups in self.by_type.values() for u in ups}
                            | set(policy.limits))
        self.worker_id = worker_id
        self._cache: dict[str, Row] = {}
        self._cache_at = -math.inf
        self.probes: dict[int, str] = {}  # job id -> upstream it probes (this worker's)
        self._room: dict[str, int] = {}  # upstream -> in-flight room left at the last settle
        # Upstreams this worker saw fail (or 429) in attempts whose report is not written
        # yet: it claims nothing for them until it is, so a fast-failing upstream (refused
        # connections) is not hit again and again before the breaker can open.
        self.local_holds: dict[str, int] = {}

    def hold_locally(self, upstream: str) -> None:
        """An attempt just saw `upstream` fail: hold it here until that is recorded."""
        self.local_holds[upstream] = self.local_holds.get(upstream, 0) + 1
        self._cache_at = -math.inf  # and read the fleet's view at the next claim

    def release_local(self, upstream: str) -> None:
        left = self.local_holds.get(upstream, 0) - 1
        if left > 0:
            self.local_holds[upstream] = left
        else:
            self.local_holds.pop(upstream, None)
        self._ready = False

    @property
    def enabled(self) -> bool:
        return self.policy.enabled and bool(self.names)

    def start(self) -> None:
        if self.enabled:
            ensure_rows(self.db, self.names, self.policy.cooldown_seconds, self.by_type)
        self._ready = True

    def _limit_rate(self, name: str, row: Row) -> float | None:
        lim = self.policy.limits.get(name)
        if lim is not None and lim.rate is not None:
            return lim.rate
        return row.rate

    def claim(self, worker_id: str, limit: int, *, lease_seconds: float,
              job_types: Sequence[str]) -> list[ClaimedJob]:
        if not self.enabled or limit <= 0:
            return leases.claim(self.db, worker_id, limit, lease_seconds=lease_seconds,
                                job_types=job_types)
        if not self._ready:
            self.start()
        guarded = [t for t in job_types if t in self.by_type]
        if not guarded:
            return leases.claim(self.db, worker_id, limit, lease_seconds=lease_seconds,
                                job_types=job_types)
        now = clock.now()
        names = sorted({u for t in guarded for u in self.by_type[t]})
        fresh = now - self._cache_at < STATE_TTL and not self.local_holds
        cached_limited = any(self._limit_rate(n, r) is not None for n, r in self._cache.items())
        if (fresh and not self.policy.limits and not cached_limited
                and all(r.state == CLOSED and not r.paused(now) and not r.failures
                        for r in self._cache.values())):
            # Nothing limited, nothing wrong a moment ago: the claim alone.
            return leases.claim(self.db, worker_id, limit, lease_seconds=lease_seconds,
                                job_types=job_types)
        if not self.policy.limits:
            # Nothing configured: read the states; when none is paused, open or adaptive
            # (the usual case), the claim is the plain one.
            with self.db.read() as conn:
                rows = _read_rows(conn, names, False, self.db.is_postgres)
            self._cache, self._cache_at = rows, now
            if not self.local_holds and all(
                    r.state == CLOSED and not r.paused(now) and r.rate is None
                    for r in rows.values()):
                return leases.claim(self.db, worker_id, limit, lease_seconds=lease_seconds,
                                    job_types=job_types)
        # Claim optimistically on budgets estimated from the rows as last read (at most
        # STATE_TTL old), then settle under a short lock of the limited upstreams' rows:
        # re-read their buckets, count what runs, give back (unclaim, in this same
        # transaction, so nobody ever saw them) what exceeds a limit, and take the tokens.
        # The rows stay locked only from the settle to the commit, never during the claim.
        pg = self.db.is_postgres
        with self.db.write() as conn:
            if fresh:
                rows = {n: r for n, r in self._cache.items() if n in names}
            else:
                rows = _read_rows(conn, names, False, pg)
                self._cache, self._cache_at = rows, now
            plan = self._plan(conn, rows, now, limit, job_types, guarded)
            claimed = self._claim_plan(conn, plan, now, lease_seconds)
            if plan.budgets:
                claimed = self._settle(conn, plan, claimed, now)
            return claimed

    def _settle(self, conn: Connection, plan: _Plan, claimed: list[ClaimedJob],
                now: float) -> list[ClaimedJob]:
        """Hold the claim to the limits exactly. Per limited upstream, in name order: take
        the tokens with one UPDATE … RETURNING (which also locks the row until the
        commit), count what runs once the row is locked (every other claim that got the
        lock first is committed by then), and give back (unclaim) the newest claims beyond
        either limit, with their tokens."""
        running: dict[str, int] | None = None
        reverted: list[ClaimedJob] = []
        for name in sorted(plan.budgets):
            lim = self.policy.limits.get(name, Limit())
            cached = self._cache.get(name)
            rate = self._limit_rate(name, cached) if cached is not None else lim.rate
            mine = [j for j in claimed if name in self.by_type.get(j.job_type, ())]
            excess = 0
            tokens: float | None = None
            if rate is not None:
                tokens = _take_tokens(conn, name, len(mine), rate, now, self.db.is_postgres)
                if tokens < 0:
                    excess = min(len(mine), math.ceil(-tokens - 1e-9))
            else:  # the lock alone (SQLite's write lock is held already)
                q = select(upstreams_t.c.name).where(upstreams_t.c.name == name)
                conn.execute(q.with_for_update() if self.db.is_postgres else q)
            if lim.max_in_flight is not None:
                if running is None:
                    running = _running_by_type(conn)
                calling = {t for t, ups in self.by_type.items() if name in ups}
                total = sum(running.get(t, 0) for t in calling) - sum(
                    1 for j in reverted if j.job_type in calling)
                excess = max(excess, min(len(mine), total - lim.max_in_flight))
                self._room[name] = lim.max_in_flight - (total - max(0, excess))
            if excess > 0:
                # Give back the newest claims, never a probe.
                order = sorted(mine, key=lambda j: (j.id in self.probes, -j.id))
                gone = order[:excess]
                _unclaim(conn, self.worker_id, gone, now)
                reverted += gone
                ids = {j.id for j in gone}
                claimed = [j for j in claimed if j.id not in ids]
                if tokens is not None:
                    tokens += len(gone)
                    _set(conn, name, tokens=tokens)
            if tokens is not None and cached is not None:
                cached.tokens, cached.tokens_at = tokens, now
        return claimed

    def _plan(self, conn: Connection, rows: dict[str, Row], now: float, limit: int,
              job_types: Sequence[str], guarded: list[str]) -> _Plan:
        """Which types may be claimed, each limited upstream's budget, the probes due."""
        plan = _Plan(limit=limit, unguarded=[t for t in job_types if t not in self.by_type])
        plan.blocked.update(u for u in list(self.local_holds) if u in rows)
        for name, row in rows.items():
            if row.paused(now):
                plan.blocked.add(name)
            elif row.state != CLOSED:
                plan.blocked.add(name)
                if row.probe_due(now):
                    plan.probe_due.append(name)
        plan.guarded = guarded
        plan.admitted = [t for t in guarded if not plan.blocked.intersection(self.by_type[t])]
        running: dict[str, int] | None = None
        for name in sorted({u for t in plan.admitted for u in self.by_type[t]}):
            urow = rows.get(name)
            if urow is None:
                continue
            lim = self.policy.limits.get(name, Limit())
            rate = self._limit_rate(name, urow)
            budget = limit
            if rate is not None:
                cap = max(1.0, rate * BURST_SECONDS)
                have = cap if urow.tokens is None or urow.tokens_at is None else min(
                    cap, urow.tokens + max(0.0, now - urow.tokens_at) * rate)
                plan.buckets[name] = (have, cap)
                budget = min(budget, int(have))
            if lim.max_in_flight is not None:
                room = self._room.get(name)
                if room is None or room < limit:
                    # Near the limit: count (unlocked, an estimate; the settle is exact).
                    # With room to spare at the last settle, claims only free more of it.
                    if running is None:
                        running = _running_by_type(conn)
                    calling = [t for t, ups in self.by_type.items() if name in ups]
                    room = lim.max_in_flight - sum(running.get(t, 0) for t in calling)
                budget = min(budget, room)
            if rate is not None or lim.max_in_flight is not None:
                plan.budgets[name] = max(0, budget)
        return plan

    def _claim_plan(self, conn: Connection, plan: _Plan, now: float,
                    lease_seconds: float) -> list[ClaimedJob]:
        """Claim what the plan admits: each group of types sharing limited upstreams up to
        their budget, then the unlimited types, then at most one probe per upstream."""
        pg = self.db.is_postgres
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for t in plan.admitted:
            groups[tuple(u for u in self.by_type[t] if u in plan.budgets)].append(t)
        claimed: list[ClaimedJob] = []
        used = plan.used
        remaining = plan.limit
        for key in sorted(k for k in groups if k):
            n = min([remaining] + [plan.budgets[u] - used[u] for u in key])
            if n <= 0:
                continue
            got = leases.claim_rows(conn, pg, self.worker_id, n, now, lease_seconds,
                                    groups[key], per_type=True)
            for u in key:
                used[u] += len(got)
            remaining -= len(got)
            claimed += got
        free_types = groups.get((), []) + plan.unguarded
        if remaining > 0 and free_types:
            got = leases.claim_rows(conn, pg, self.worker_id, remaining, now, lease_seconds,
                                    free_types, per_type=True)
            remaining -= len(got)
            claimed += got
        # At most one probe per upstream, fleet-wide: the conditional UPDATE decides.
        for name in plan.probe_due:
            if remaining <= 0:
                break
            others = plan.blocked - {name}
            types = [t for t in plan.guarded
                     if name in self.by_type[t] and not others.intersection(self.by_type[t])]
            if not types:
                continue
            won = conn.execute(
                update(upstreams_t)
                .where(upstreams_t.c.name == name,
                       ((upstreams_t.c.state == OPEN)
                        & ((upstreams_t.c.next_probe_at.is_(None))
                           | (upstreams_t.c.next_probe_at <= now)))
                       | ((upstreams_t.c.state == HALF_OPEN)
                          & ((upstreams_t.c.probe_expires_at.is_(None))
                             | (upstreams_t.c.probe_expires_at <= now))))
                .values(state=HALF_OPEN, probe_owner=self.worker_id,
                        probe_expires_at=now + self.policy.probe_lease_seconds, updated_at=now)
                .returning(upstreams_t.c.name)).scalar()
            if won is None:
                continue
            got = leases.claim_rows(conn, pg, self.worker_id, 1, now, lease_seconds, types,
                                    per_type=True)
            if not got:  # nothing to probe with: back to open, probe due at once
                _set(conn, name, state=OPEN, probe_owner=None, probe_expires_at=None,
                     probe_job_id=None, next_probe_at=now)
                continue
            _set(conn, name, probe_job_id=got[0].id)
            self.probes[got[0].id] = name
            if name in self._cache:
                self._cache[name].state = HALF_OPEN
            remaining -= 1
            claimed += got
            _event("upstream.half_open", name, probe_job_id=got[0].id,
                   worker_id=self.worker_id)
        claimed.sort(key=lambda j: j.id)
        return claimed

    def renew_probes(self, lease_seconds: float) -> None:
        """Extend the probe leases this worker holds (with its job leases)."""
        if not self.probes:
            return
        with self.db.write() as conn:
            conn.execute(update(upstreams_t)
                         .where(upstreams_t.c.probe_owner == self.worker_id,
                                upstreams_t.c.state == HALF_OPEN)
                         .values(probe_expires_at=clock.now() + lease_seconds))

    def forget_probe(self, job_id: int) -> None:
        self.probes.pop(job_id, None)

    # --- what attempts saw ----------------------------------------------------------------------

    def observe(self, job_type: str, job_id: int, upstream: str | None, signal: str | None,
                retry_after: float | None) -> list[Observation]:
        """What one finished attempt of `job_type` says about each upstream it calls: a
        success is `ok` for all of them; an error names its upstream (SyncError.upstream);
        a probe that learned nothing about its upstream is `neutral` (it is released)."""
        ups = self.by_type.get(job_type, ())
        out: list[Observation] = []
        if signal == "ok":
            out = [Observation(u, "ok", job_id) for u in ups]
        elif upstream is not None and signal is not None and upstream in ups:
            out = [Observation(upstream, signal, job_id, retry_after)]  # type: ignore[arg-type]
        probe = self.probes.get(job_id)
        if probe is not None and not any(o.upstream == probe for o in out):
            out.append(Observation(probe, "neutral", job_id))
        return out

    def needs_write(self, obs: Observation) -> bool:
        """Successes write nothing while the upstream is closed, has no failures counted and
        no adaptive rate (as last read): the hot path stays free."""
        if obs.signal not in ("ok", "alive") or obs.job_id in self.probes:
            return True
        row = self._cache.get(obs.upstream)
        return row is None or row.failures > 0 or row.state != CLOSED or row.rate is not None

    def record(self, observations: Sequence[Observation]) -> None:
        if not self.enabled:
            return
        todo = [o for o in observations if o.upstream in self.names and self.needs_write(o)]
        if not todo:
            for o in observations:
                self.probes.pop(o.job_id, None)
            return
        now = clock.now()
        by_name: dict[str, list[Observation]] = defaultdict(list)
        for o in todo:
            by_name[o.upstream].append(o)
        with self.db.write() as conn:
            if self.db.is_postgres:
                _soft(conn)
            rows = _read_rows(conn, sorted(by_name), True, self.db.is_postgres)
            for name, obs in by_name.items():
                row = rows.get(name)
                if row is not None:
                    self._apply(conn, row, obs, now)
                    self._cache[name] = row
        for o in observations:
            self.probes.pop(o.job_id, None)

    def _apply(self, conn: Connection, row: Row, obs: list[Observation], now: float) -> None:
        p = self.policy
        values: dict[str, Any] = {}
        if now - row.recent_since > RECENT_SECONDS:
            if row.recent_429 == 0 and p.limits.get(row.name, Limit()).rate is None:
                row.rate = None  # a minute without a 429: the adaptive limit is lifted
            row.recent_429 = row.recent_5xx = 0
            row.recent_since = now
            values.update(recent_429=0, recent_5xx=0, recent_since=now)
        configured_rate = p.limits.get(row.name, Limit()).rate
        for o in obs:
            is_probe = (row.state == HALF_OPEN and row.probe_job_id == o.job_id
                        and self.probes.get(o.job_id) == row.name)
            if o.signal == "neutral":
                if is_probe:  # the probe learned nothing about this upstream: probe again
                    row.state, row.probe_owner, row.probe_job_id = OPEN, None, None
                    row.probe_expires_at, row.next_probe_at = None, now
                continue
            if o.signal in ("ok", "alive"):
                if row.failures:
                    row.failures, row.failures_since = 0, None
                if is_probe:
                    row.state, row.probe_owner, row.probe_job_id = CLOSED, None, None
                    row.probe_expires_at = row.next_probe_at = row.opened_at = None
                    row.cooldown_seconds = p.cooldown_seconds
                    _event("upstream.closed", row.name, probe_job_id=o.job_id)
                if row.rate is not None and configured_rate is None and o.signal == "ok":
                    # Additive increase: one success is 1/rate seconds at this rate, so the
                    # rate grows by about max(1, AIMD_INCREASE * rate) per second.
                    row.rate += max(1.0, AIMD_INCREASE * row.rate) / max(row.rate, 1.0)
            elif o.signal == "rate_limited":
                row.recent_429 += 1
                # One cut per pause: the other 429s of the same burst arrive while it lasts.
                cut = not row.paused(now)
                pause = o.retry_after if o.retry_after is not None else NO_RETRY_AFTER_PAUSE
                until = now + pause
                if row.paused_until is None or until > row.paused_until:
                    if not row.paused(now):
                        _event("upstream.paused", row.name, until=clock.iso(until),
                               reason="429 Retry-After" if o.retry_after is not None
                               else "429", job_id=o.job_id)
                    row.paused_until = until
                    # The bucket restarts empty when the pause ends: a full bucket then
                    # would burst past the limit the upstream just enforced.
                    row.tokens, row.tokens_at = 0.0, until
                if configured_rate is None and cut:
                    observed = self._observed_rate(conn, row.name, now)
                    base = row.rate if row.rate is not None else observed
                    new = max(AIMD_MIN_RATE, base * AIMD_DECREASE)
                    if row.rate is None or new < row.rate:
                        _event("upstream.rate_cut", row.name, rate=round(new, 2),
                               previous=None if row.rate is None else round(row.rate, 2))
                        row.rate = new
                        row.tokens = 0.0
                        row.tokens_at = max(now, row.tokens_at or now)
                if is_probe:  # it answered: alive
                    row.state, row.probe_owner, row.probe_job_id = CLOSED, None, None
                    row.probe_expires_at = row.next_probe_at = row.opened_at = None
                    row.cooldown_seconds = p.cooldown_seconds
                    _event("upstream.closed", row.name, probe_job_id=o.job_id)
            else:  # failure
                row.recent_5xx += 1
                if is_probe:
                    row.cooldown_seconds = min(p.cooldown_max_seconds,
                                               max(p.cooldown_seconds, row.cooldown_seconds) * 2)
                    row.state, row.probe_owner, row.probe_job_id = OPEN, None, None
                    row.probe_expires_at = None
                    row.opened_at, row.next_probe_at = now, now + row.cooldown_seconds
                    _event("upstream.reopened", row.name, cooldown=row.cooldown_seconds,
                           probe_job_id=o.job_id)
                    continue
                if row.state != CLOSED:
                    continue
                if row.failures_since is None or now - row.failures_since > p.window_seconds:
                    row.failures, row.failures_since = 0, now
                row.failures += 1
                if row.failures >= p.breaker_failures:
                    row.state, row.opened_at = OPEN, now
                    row.cooldown_seconds = p.cooldown_seconds
                    row.next_probe_at = now + row.cooldown_seconds
                    _event("upstream.opened", row.name, failures=row.failures,
                           cooldown=row.cooldown_seconds)
        # Adaptive rate near nothing binding for long: forget it (unlimited again).
        fields = {k: getattr(row, k) for k in _COLUMNS
                  if k not in ("name", "updated_at", "job_types")}
        fields.update(values)
        _set(conn, row.name, **fields)

    def _observed_rate(self, conn: Connection, name: str, now: float) -> float:
        """Jobs of the types calling `name` finished in the last second."""
        calling = [t for t, ups in self.by_type.items() if name in ups]
        n = conn.execute(text(
            "SELECT count(*) FROM sync_job_attempts a JOIN sync_jobs j ON j.id = a.job_id "
            "WHERE a.finished_at > :since AND j.job_type IN :types"
        ).bindparams(_expanding("types")), {"since": now - 1.0, "types": calling}).scalar()
        return max(AIMD_MIN_RATE, float(n or 0))


def _expanding(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


# --- reads for the faces ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UpstreamState:
    name: str
    state: str  # closed | open | half_open | paused (paused wins while it lasts)
    breaker: str  # closed | open | half_open
    paused_until: float | None
    configured_rate: float | None
    current_rate: float | None
    max_in_flight: int | None
    in_flight: int
    waiting: int
    recent_429: int
    recent_5xx: int
    failures: int
    cooldown_seconds: float
    next_probe_at: float | None
    probe_owner: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def states(db: Database, *, policy: Policy | None = None,
           upstreams_by_type: Mapping[str, Sequence[str]] | None = None,
           counts: Mapping[tuple[str, str], int] | None = None) -> list[UpstreamState]:
    """Every known upstream's state, with its in-flight and waiting jobs (`counts`: jobs
    by (type, status) when the caller has them already). Which job types call which
    upstream: `upstreams_by_type` (the app's), else what the fleet's workers recorded."""
    limits = policy.limits if policy else {}
    now = clock.now()
    with db.read() as conn:
        rows = {r.name: _row(r) for r in conn.execute(select(upstreams_t))}
        by_type = (type_upstreams(mapping=upstreams_by_type) if upstreams_by_type is not None
                   else recorded_type_upstreams(rows.values()))
        if counts is None:
            counts = {(t, s): n for t, s, n in conn.execute(
                select(jobs_t.c.job_type, jobs_t.c.status, func.count())
                .where(jobs_t.c.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
                .group_by(jobs_t.c.job_type, jobs_t.c.status))}
    names = sorted(set(rows) | {u for ups in by_type.values() for u in ups} | set(limits))
    out = []
    for name in names:
        row = rows.get(name) or Row(name)
        calling = [t for t, ups in by_type.items() if name in ups]
        lim = limits.get(name, Limit())
        state = "paused" if row.paused(now) else row.state
        out.append(UpstreamState(
            name=name, state=state, breaker=row.state,
            paused_until=row.paused_until if row.paused(now) else None,
            configured_rate=lim.rate, current_rate=lim.rate if lim.rate else row.rate,
            max_in_flight=lim.max_in_flight,
            in_flight=sum(counts.get((t, JobStatus.RUNNING), 0) for t in calling),
            waiting=sum(counts.get((t, JobStatus.PENDING), 0) for t in calling),
            recent_429=row.recent_429, recent_5xx=row.recent_5xx, failures=row.failures,
            cooldown_seconds=row.cooldown_seconds,
            next_probe_at=row.next_probe_at if row.state == OPEN else None,
            probe_owner=row.probe_owner))
    return out


def hold_reasons(db: Database, jobs: Iterable[Any], *,
                 upstreams_by_type: Mapping[str, Sequence[str]] | None = None
                 ) -> dict[int, str]:
    """Why each pending job (records with id, job_type, status) is held back, if it is:
    {job id: "held: billing open"}. Jobs not held are left out. Which job types call
    which upstream: `upstreams_by_type`, else what the fleet's workers recorded."""
    pending = [j for j in jobs if str(j.status) == JobStatus.PENDING]
    if not pending:
        return {}
    now = clock.now()
    with db.read() as conn:
        rows = {r.name: _row(r) for r in conn.execute(select(upstreams_t))}
    by_type = (type_upstreams(mapping=upstreams_by_type) if upstreams_by_type is not None
               else recorded_type_upstreams(rows.values()))
    pending = [j for j in pending if by_type.get(j.job_type)]
    why: dict[str, str] = {}
    for name, row in rows.items():
        if row.paused(now):
            why[name] = f"{name} paused {max(1, math.ceil((row.paused_until or now) - now))}s"
        elif row.state == OPEN:
            why[name] = f"{name} open"
        elif row.state == HALF_OPEN:
            why[name] = f"{name} half-open"
    out = {}
    for j in pending:
        reasons = [why[u] for u in by_type[j.job_type] if u in why]
        if reasons:
            out[int(j.id)] = "held: " + ", ".join(reasons)
    return out


# --- the operator's controls --------------------------------------------------------------------

class UnknownUpstream(InvalidInput):
    pass


def known_upstreams(db: Database, upstreams_by_type: Mapping[str, Sequence[str]] | None = None,
                    policy: Policy | None = None) -> list[str]:
    """The upstreams the fleet recorded, the app's (`upstreams_by_type`) and the limited."""
    by_type = upstreams_by_type or {}
    with db.read() as conn:
        rows = set(conn.execute(select(upstreams_t.c.name)).scalars())
    return sorted(rows | {u for ups in by_type.values() for u in ups}
                  | set(policy.limits if policy else ()))


def _control(db: Database, name: str, action: str, actor: str, detail: str,
             known: Iterable[str], cooldown: float,
             by_type: Mapping[str, Sequence[str]] | None, **values: Any) -> None:
    known = sorted(set(known))
    if name not in known:
        raise UnknownUpstream(f"unknown upstream {name!r} (known: {', '.join(known)})")
    ensure_rows(db, [name], cooldown, by_type)
    now = clock.now()
    with db.write() as conn:
        _set(conn, name, **values)
        conn.execute(audit_t.insert().values(at=now, actor=actor, action=action, job_id=None,
                                             upstream=name, detail=detail))
    _event(f"upstream.{action.split('.', 1)[-1]}", name, actor=actor, detail=detail)


def pause(db: Database, name: str, seconds: float, *, actor: str,
          known: Iterable[str], cooldown: float = 5.0,
          by_type: Mapping[str, Sequence[str]] | None = None) -> None:
    until = clock.now() + seconds
    _control(db, name, "upstream.pause", actor, f"paused for {seconds:g}s", known, cooldown,
             by_type, paused_until=until)


def resume(db: Database, name: str, *, actor: str, known: Iterable[str],
           cooldown: float = 5.0, by_type: Mapping[str, Sequence[str]] | None = None) -> None:
    _control(db, name, "upstream.resume", actor, "pause lifted", known, cooldown, by_type,
             paused_until=None)


def reset(db: Database, name: str, *, actor: str, known: Iterable[str],
          cooldown: float = 5.0, by_type: Mapping[str, Sequence[str]] | None = None) -> None:
    """Close the breaker, forget the failures, the pause and the adaptive rate."""
    _control(db, name, "upstream.reset", actor, "breaker closed by operator", known, cooldown,
             by_type, state=CLOSED, failures=0, failures_since=None, opened_at=None,
             next_probe_at=None, probe_owner=None, probe_job_id=None, probe_expires_at=None,
             cooldown_seconds=cooldown, paused_until=None, rate=None, tokens=None,
             tokens_at=None)


def open_breaker(db: Database, name: str, *, actor: str, known: Iterable[str],
                 cooldown: float = 5.0,
                 by_type: Mapping[str, Sequence[str]] | None = None) -> None:
    """Open the breaker by hand: probes start after the cool-down, as after failures."""
    now = clock.now()
    _control(db, name, "upstream.open", actor, "breaker opened by operator", known, cooldown,
             by_type, state=OPEN, opened_at=now, next_probe_at=now + cooldown, probe_owner=None,
             probe_job_id=None, probe_expires_at=None, cooldown_seconds=cooldown)
