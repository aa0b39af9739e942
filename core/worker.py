"""The worker: claim in batches, run handlers concurrently, keep leases alive, write
results in batches (each fenced), recover expired leases, shut down gracefully.

Everything database-bound runs in a small thread pool so a slow or locked database never
stalls the handlers' I/O; the worker itself is one asyncio task tree, so the console can
run it in a background thread and the CLI in the main one.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from core import clock, completion, heartbeats, leases, reads, retention, schedules
from core.config import Settings
from core.db import WORKER_DB_THREADS, Database, DatabaseError, local_wakeup
from core.execution import execute
from core.handlers import JobContext, Registry
from core.integrations.clients import (
    job_headers_var,
    make_upstream_clients,
    pool_shards,
    resolve_upstreams,
)
from core.integrations.mock import MockUpstream
from core.logging import get_logger, one_line
from core.records import ClaimedJob, Completion, WorkerInfo
from core.retry_policy import Backoff, JobPolicy
from core.statuses import AttemptOutcome
from core.upstream_protection import Observation, Policy, Protection, type_upstreams

T = TypeVar("T")
_DB_ERRORS = (DatabaseError, SQLAlchemyError, OSError)


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class WorkerStats:
    processed: int = 0
    succeeded: int = 0
    released: int = 0


class Worker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        registry: Registry | None = None,
        mock: MockUpstream | None = None,
        worker_id: str | None = None,
        concurrency: int | None = None,
        start_paused: bool = False,
        upstreams: Mapping[str, Sequence[str]] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        if registry is None:
            from core.app_loading import load_app

            registry = load_app(settings.app, demo=settings.demo)
        self.registry = registry
        self.mock = mock
        # Refuses (UpstreamConfigError, one line) when a job type needs an upstream without a
        # URL outside demo mode: before anything starts.
        self.upstream_config = resolve_upstreams(registry, settings)
        self.policies: dict[str, JobPolicy] = {n: registry.policy(n, settings)
                                               for n in registry.names()}
        self._backoffs = {n: p.backoff for n, p in self.policies.items()}
        self.clients: dict[str, Any] = {}  # the first shard's client per upstream
        # Per shard (core.integrations.clients.pool_shards): job type -> its upstreams'
        # clients; a job takes the shard running the fewest jobs.
        self._type_clients: list[dict[str, dict[str, Any]]] = []
        self._shard_jobs: list[int] = []
        self._all_clients: list[Any] = []
        self.id = worker_id or make_worker_id()
        self.concurrency = concurrency or settings.concurrency
        self.backoff = Backoff(settings.job_backoff_seconds_base,
                               settings.job_backoff_seconds_cap, settings.job_backoff_jitter)
        self.stats = WorkerStats()
        # Upstream protection: which upstreams each job type calls (the app's declaration,
        # else `upstreams`, else the demo's) and the fleet-wide admission before each claim.
        by_type = type_upstreams(self.registry, upstreams)
        self.protection = Protection(
            db, policy or Policy.from_settings(settings),
            {t: ups for t, ups in by_type.items() if t in self.registry}, self.id)
        self.started_at = clock.now()
        self.log = get_logger(worker_id=self.id)
        enabled = getattr(self.log, "is_enabled_for", None)  # structlog's filtering loggers
        self._log_successes = enabled is None or enabled(logging.INFO)
        # Debug lines on the hot path (tests observe them) are built only when kept.
        self._log_debug = enabled is None or enabled(logging.DEBUG)
        self._paused = start_paused
        self._state = "starting"
        self._force = False
        self._heartbeat_ok = False
        self._held: dict[int, int] = {}  # job id -> lease token, until its result is written
        self._claimed_at: dict[int, float] = {}  # job id -> when its attempt started
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._completing: set[int] = set()
        self._pending: list[Completion] = []
        self._finished_times: deque[float] = deque(maxlen=100_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._flush_wake: asyncio.Event | None = None
        self._stop_requested = False
        self._pool = ThreadPoolExecutor(max_workers=WORKER_DB_THREADS,
                                        thread_name_prefix="syncbridge-db")
        # Optional observers (`--metrics-port`), called on the worker's loop; None: no cost.
        self.on_claimed: Callable[[list[ClaimedJob]], None] | None = None
        self.on_completed: Callable[[Completion, bool], None] | None = None

    # --- thread-safe controls -----------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._state == "running" and self._paused:
            return "paused"
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake_threadsafe()

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming, finish in-flight work within the shutdown timeout (or release it
        at once with force), then return from run()."""
        self._stop_requested = True
        self._force = self._force or force
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set_stop)

    def throughput(self, window: float = 5.0) -> float:
        """Jobs finished per second over the last `window` seconds."""
        cutoff = time.monotonic() - window
        # Called from other threads (the console) while the worker appends: copy first, in
        # one C-level call, instead of iterating a deque that may change underneath.
        times = list(self._finished_times)
        return (len(times) - bisect.bisect_left(times, cutoff)) / window

    def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._wake is not None:
            self._wake.set()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._wake is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # loop closed between the check and the call

    # --- plumbing ------------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            last_seen_at=clock.now(), state=self.state, concurrency=self.concurrency,
            in_flight=len(self._tasks), processed=self.stats.processed,
        )

    async def _sleep(self, timeout: float | None) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, until_empty: bool = False) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._flush_wake = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        unsubscribe = local_wakeup.subscribe(self._wake_threadsafe)
        listener = None
        if self.db.is_postgres:
            from core.wakeup import PgListener

            listener = PgListener(self.db, self._wake_threadsafe)
            listener.start()
        self.clients, self._type_clients, self._all_clients = {}, [], []
        shards = pool_shards(self.concurrency)
        per_shard = -(-self.concurrency // shards)  # least-loaded choice: never more
        for _ in range(shards):
            clients = make_upstream_clients(self.upstream_config, self.settings, self.mock,
                                            jobs=per_shard)
            self._all_clients.extend(clients.values())
            self._type_clients.append({spec.name: {n: clients[n] for n in spec.upstreams}
                                       for spec in self.registry.specs()})
            if not self.clients:
                self.clients = clients
        self._shard_jobs = [0] * shards
        background: list[asyncio.Task[None]] = []
        try:
            await self._db(heartbeats.record_heartbeat, self.db, self._info())
            self._heartbeat_ok = True
            self._state = "running"
            # Every process start is a new worker id: forget ones that stopped a day ago.
            await self._db(heartbeats.prune_workers, self.db,
                           clock.now() - heartbeats.FORGET_WORKERS_AFTER_SECONDS)
            try:
                await self._db(self.protection.start)
            except _DB_ERRORS as exc:  # the first claim tries again
                self.log.warning("upstreams.start_failed", error=one_line(exc))
            self.log.info("worker.started", concurrency=self.concurrency,
                          database=self.db.display_url, job_types=self.registry.names())
            background = [asyncio.create_task(self._heartbeat_loop()),
                          asyncio.create_task(self._flush_loop())]
            if self.registry.schedules():  # no schedules: no task, no cost
                background.append(asyncio.create_task(self._schedule_loop()))
            if self.settings.prune_interval_seconds > 0:
                # Retention: one pruner across the fleet (core.retention), on a thread of
                # its own; shutdown cancels it between batches.
                background.append(asyncio.create_task(retention.prune_in_worker(
                    self.db, self.settings, self.id, self.registry)))
            await self._claim_loop(until_empty)
        finally:
            await asyncio.shield(self._shutdown(background))
            if listener:
                listener.stop()
            unsubscribe()
            for client in self._all_clients:
                await client.aclose()
            self._pool.shutdown(wait=False)
        return self.stats

    async def _claim_loop(self, until_empty: bool) -> None:
        assert self._stop is not None
        types = self.registry.names()
        failures = 0
        poll = self.settings.poll_seconds
        while not self._stop.is_set():
            free = self.concurrency - len(self._tasks)
            if self._paused or not self._heartbeat_ok or free <= 0:
                await self._sleep(poll)
                continue
            try:
                # Admission first (core.upstream_protection): types whose upstream is
                # paused, open or at its limit are not claimed.
                jobs = await self._db(self.protection.claim, self.id, free,
                                      lease_seconds=self.settings.lease_seconds, job_types=types)
                failures = 0
            except _DB_ERRORS as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                self.log.warning("claim.failed", error=one_line(exc), retry_in=delay)
                await self._sleep(delay)
                continue
            if jobs and self.on_claimed is not None:
                self.on_claimed(jobs)
            for job in jobs:
                self._held[job.id] = job.lease_token
                self._claimed_at[job.id] = job.claimed_at
                self._tasks[job.id] = asyncio.create_task(self._run_one(job))
            if not jobs and self._log_debug:
                self.log.debug("claim.empty")  # observable (at debug) for tests: now idle
            if len(jobs) < free:
                if until_empty and not self._tasks and not self._held:
                    try:
                        if await self._db(reads.is_drained, self.db, types):
                            self.log.info("worker.queue_empty")
                            return
                    except _DB_ERRORS:
                        pass
                await self._sleep(poll)

    async def _run_one(self, job: ClaimedJob) -> None:
        log = self.log.bind(job_id=job.id, attempt=job.lease_token, job_type=job.job_type,
                            entity_id=job.entity_id, correlation_id=job.correlation_id)
        loads = self._shard_jobs
        shard = loads.index(min(loads)) if len(loads) > 1 else 0
        clients = self._type_clients[shard].get(job.job_type, {}) if self._type_clients else {}
        ctx = JobContext(job.id, job.job_type, job.entity_id, job.payload, job.correlation_id,
                         job.lease_token, clients.get("crm"), clients.get("billing"), log,
                         upstreams=clients)
        policy = self.policies.get(job.job_type)
        # Each job runs in its own task, so this context variable is this job's alone; the
        # clients' request hook turns it into X-Correlation-ID and X-SyncBridge-Attempt.
        job_headers_var.set((job.correlation_id, job.lease_token))
        if loads:
            loads[shard] += 1
        try:
            if policy is None:
                completion = await execute(job, self.registry.get(job.job_type), ctx,
                                           self.backoff, self.id)
            else:
                completion = await execute(job, self.registry.get(job.job_type), ctx,
                                           policy.backoff, self.id, retry_on=policy.retry_on,
                                           timeout=policy.timeout)
        except asyncio.CancelledError:
            return  # whoever canceled it (lease loss, cancel, shutdown) records the attempt
        finally:
            if loads:
                loads[shard] -= 1
            self._tasks.pop(job.id, None)
            if self._wake is not None:
                self._wake.set()
        if (completion.upstream is not None and self.protection.enabled
                and completion.upstream_signal in ("failure", "rate_limited")):
            self.protection.hold_locally(completion.upstream)  # until _observe reports it
        self._completing.add(job.id)
        self._pending.append(completion)
        if self._log_debug:
            log.debug("attempt.queued", outcome=completion.outcome)  # tests: queued, unwritten
        assert self._flush_wake is not None
        self._flush_wake.set()

    async def _flush_loop(self) -> None:
        assert self._flush_wake is not None
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        failures = 0
        while self._pending:
            # Everything finished while the previous write was in progress goes in one batch.
            batch, self._pending = self._pending, []
            try:
                applied = await self._db(completion.complete, self.db, batch)
            except _DB_ERRORS as exc:
                failures += 1
                self._pending[:0] = batch
                self.log.warning("complete.failed", error=one_line(exc), batch=len(batch))
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if self.protection.enabled:
                await self._observe(batch, applied)
            due_now = False
            for c, ok in zip(batch, applied, strict=True):
                self._completing.discard(c.job_id)
                if self._held.get(c.job_id) == c.lease_token:
                    del self._held[c.job_id]
                    self._claimed_at.pop(c.job_id, None)
                self._account(c, ok)
                if self.on_completed is not None:
                    self.on_completed(c, ok)
                if ok and c.outcome == AttemptOutcome.RETRY and c.next_run_at is not None:
                    due_now = due_now or c.next_run_at <= c.finished_at
            if due_now and self._wake is not None:
                # A retry with no backoff is due at once: claim it now, not at the next poll.
                self._wake.set()

    async def _observe(self, batch: list[Completion], applied: list[bool]) -> None:
        """Tell the fleet's upstream state what these attempts saw (breaker, pause, rate)."""
        protection = self.protection
        observations: list[Observation] = []
        held = [c.upstream for c in batch if c.upstream is not None
                and c.upstream_signal in ("failure", "rate_limited")]
        try:
            await self._report(batch, applied, observations)
        finally:
            for upstream in held:
                protection.release_local(upstream)

    async def _report(self, batch: list[Completion], applied: list[bool],
                      observations: list[Observation]) -> None:
        protection = self.protection
        for c, ok in zip(batch, applied, strict=True):
            if not ok or c.job_type is None:
                protection.forget_probe(c.job_id)
                continue
            for o in protection.observe(c.job_type, c.job_id, c.upstream, c.upstream_signal,
                                        c.retry_after):
                if protection.needs_write(o):
                    observations.append(o)
        if not observations:
            return
        try:
            await self._db(protection.record, observations)
        except _DB_ERRORS as exc:
            self.log.warning("upstreams.record_failed", error=one_line(exc),
                             observations=len(observations))

    def _account(self, c: Completion, applied: bool) -> None:
        self.stats.processed += 1
        self._finished_times.append(time.monotonic())
        if applied and c.outcome == AttemptOutcome.SUCCESS:
            self.stats.succeeded += 1
            if self._log_successes:  # thousands a second: skip building a line nobody keeps
                self.log.info("attempt.finished", outcome=c.outcome, **_fields(c))
            return
        fields = _fields(c)
        if not applied:
            self.log.warning("attempt.fenced", outcome="lease_lost", discarded=c.outcome, **fields)
            return
        self.log.warning("attempt.finished", outcome=c.outcome, error=c.error_message,
                         http_status=c.http_status, next_run_at=clock.iso(c.next_run_at),
                         **fields)

    async def _heartbeat_loop(self) -> None:
        assert self._stop is not None
        interval = heartbeats.heartbeat_interval(self.settings.lease_seconds)
        while True:
            try:
                await self._db(heartbeats.record_heartbeat, self.db, self._info())
                if not self._heartbeat_ok:
                    self.log.info("heartbeat.restored")
                self._heartbeat_ok = True
            except _DB_ERRORS as exc:
                if self._heartbeat_ok:
                    self.log.warning("heartbeat.failed", error=one_line(exc),
                                     note="not claiming until the heartbeat is written")
                self._heartbeat_ok = False
            await self._renew()
            for job_id in [j for j in self.protection.probes if j not in self._held]:
                # A probe whose lease this worker lost (canceled, expired): stop renewing
                # its probe lease, so another probe can run once it expires.
                self.protection.forget_probe(job_id)
            if self.protection.probes:
                try:
                    await self._db(self.protection.renew_probes, self.settings.lease_seconds)
                except _DB_ERRORS as exc:
                    self.log.warning("upstreams.probe_renew_failed", error=one_line(exc))
            try:
                recovered = await self._db(leases.recover_expired, self.db, backoff=self.backoff,
                                           backoffs=self._backoffs)
                for job_id, status in recovered:
                    self.log.warning("lease.recovered", job_id=job_id, status=status)
            except _DB_ERRORS as exc:
                self.log.warning("recover.failed", error=one_line(exc))
            await asyncio.sleep(interval)

    def _max_attempts(self, job_type: str) -> int:
        """A new job's budget: its type's policy."""
        return self.policies[job_type].max_attempts

    async def _schedule_loop(self) -> None:
        """Tick the registry's recurring schedules: at each new slot, try to insert it
        (core.schedules.tick: once across every worker, the latest due slot only)."""
        assert self._stop is not None
        active = []
        for s in self.registry.schedules():
            if s.job_type in self.registry:
                active.append(s)
            else:
                self.log.error("schedule.unknown_job_type", schedule=s.name,
                               job_type=s.job_type, note="schedule ignored")
        ticked: dict[str, float] = {}  # schedule -> the latest slot this worker tried
        while not self._stop.is_set():
            now = clock.now()
            due = [s for s in active if ticked.get(s.name) != s.latest_slot(now)]
            if due and not self._paused:
                try:
                    for slot in await self._db(schedules.tick, self.db, due,
                                               max_attempts=self._max_attempts, now=now):
                        self.log.info("schedule.slot", schedule=slot.schedule,
                                      slot_at=clock.iso(slot.slot_at), job_id=slot.job_id,
                                      skipped=slot.job_id is None)
                    ticked.update((s.name, s.latest_slot(now)) for s in due)
                except _DB_ERRORS as exc:
                    self.log.warning("schedule.tick_failed", error=one_line(exc))
            wait = min((s.next_slot(now) for s in active), default=now + 1) - clock.now()
            await asyncio.sleep(min(max(wait, 0.01), schedules.MAX_TICK_SECONDS))

    async def _renew(self) -> None:
        held = {j: t for j, t in self._held.items() if j not in self._completing}
        if not held:
            return
        try:
            still = await self._db(leases.renew_leases, self.db, self.id, held,
                                   self.settings.lease_seconds)
        except _DB_ERRORS as exc:
            self.log.warning("lease.renew_failed", error=one_line(exc), jobs=len(held))
            return
        lost = {j: t for j, t in held.items()
                if j not in still and self._held.get(j) == t and j not in self._completing}
        if not lost:
            return
        for job_id in lost:
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()
            del self._held[job_id]
            self.log.warning("lease.lost", job_id=job_id, attempt=lost[job_id],
                             note="job canceled or lease taken over; attempt stopped")
        stopped = {j: (t, self._claimed_at.pop(j, clock.now())) for j, t in lost.items()}
        try:
            await self._db(leases.abandon, self.db, self.id, stopped,
                           "lease lost (canceled, or expired and recovered); attempt stopped")
        except _DB_ERRORS as exc:
            self.log.warning("lease.abandon_failed", error=one_line(exc))

    def cancel_local(self, job_id: int) -> None:
        """Stop a job this worker runs right away (the console calls this after a cancel);
        the lease check would find out at its next tick anyway."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_task, job_id)

    def _cancel_task(self, job_id: int) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            self._held.pop(job_id, None)
            self._claimed_at.pop(job_id, None)

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        self._state = "stopping"
        timeout = 0.0 if self._force else self.settings.shutdown_timeout_seconds
        tasks = list(self._tasks.values())
        if tasks:
            self.log.info("worker.draining", in_flight=len(tasks), timeout=timeout)
            unfinished = set(tasks)
            drain_until = time.monotonic() + timeout
            # In short slices, so a second signal (request_stop(force=True)) cuts it short.
            while unfinished and not self._force and time.monotonic() < drain_until:
                _, unfinished = await asyncio.wait(
                    unfinished, timeout=min(0.1, drain_until - time.monotonic()))
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        deadline = time.monotonic() + max(2.0, timeout)
        # `_completing` covers results still queued and a batch the flush loop is writing
        # right now: cancelling that write would leave its jobs running until lease expiry.
        while self._completing and time.monotonic() < deadline:
            if self._pending:
                await self._flush()
            else:
                await asyncio.sleep(0.01)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        unfinished_leases = {j: t for j, t in self._held.items() if j not in self._completing}
        if unfinished_leases:
            try:
                n = await self._db(leases.release, self.db, self.id, unfinished_leases)
                self.stats.released += n
                self.log.info("worker.released", jobs=n)
            except _DB_ERRORS as exc:
                self.log.warning("worker.release_failed", error=one_line(exc),
                                 note="leases will expire and be recovered")
        self._state = "stopped"
        try:
            await self._db(heartbeats.record_heartbeat, self.db, self._info())
        except _DB_ERRORS:
            pass
        self.log.info("worker.stopped", processed=self.stats.processed,
                      succeeded=self.stats.succeeded, released=self.stats.released)


def _fields(c: Completion) -> dict[str, Any]:
    return dict(job_id=c.job_id, attempt=c.lease_token, correlation_id=c.correlation_id,
                duration_ms=round(c.duration_ms, 2), error_type=c.error_type)
