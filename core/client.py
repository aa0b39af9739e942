"""SyncBridge as a library: one object with the verbs the command line has.

    from core.client import SyncBridge

    with SyncBridge("sqlite:///jobs.db", app="myapp.jobs:registry") as sb:
        job = sb.enqueue("contact", "c_42", payload={"source": "signup"})
        sb.run_worker(until_empty=True)
        print(sb.get(job.job_id).status)

In an asyncio app, `sb.aio` has the same verbs as coroutines (each database call runs in a
thread, so the event loop never waits on the database), and `await sb.aio.run_worker()`
runs the worker on the running loop.

Settings passed in code (`url=`, `settings=`, keyword overrides) win over the environment;
whatever is not passed comes from SYNCBRIDGE_* variables as for the command line. The
library writes no log line unless logging is configured (core.logging.configure).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from core import enqueue as _enqueue
from core import metrics as _metrics
from core import operator_actions, reads
from core.config import Settings, load_settings
from core.db import Database
from core.enqueue import EnqueueResult
from core.errors import JobNotFound
from core.handlers import Registry
from core.records import Attempt, Job
from core.worker import Worker, WorkerStats

T = TypeVar("T")

EnqueueItem = str | tuple[str, dict[str, Any] | None]
# Module-level names: inside the classes `list` is the verb.
Jobs = list[Job]
Attempts = list[Attempt]
EnqueueResults = list[EnqueueResult]


class SyncBridge:
    """A handle on one queue (database) and one app (job types, upstreams, policies).

    `url`: the database URL; `app`: a Registry or "module[:attr]" (default: the settings'
    SYNCBRIDGE_APP, else the demo app); `settings`: a complete Settings; `overrides`: any
    Settings field (e.g. `concurrency=4`, `demo=True`). `migrate`: bring the schema to head
    when the database is first opened.
    """

    def __init__(self, url: str | None = None, app: Registry | str | None = None,
                 settings: Settings | None = None, *, migrate: bool = True,
                 **overrides: Any) -> None:
        from core.app_loading import load_app

        updates = {k: v for k, v in overrides.items() if v is not None}
        if url is not None:
            updates["database_url"] = url
        if isinstance(app, str):
            updates["app"] = app
        if settings is None:
            self.settings = load_settings(**updates)
        elif updates:
            # Every field explicit, so nothing is read from the environment again.
            self.settings = load_settings(**{**settings.model_dump(), **updates})
        else:
            self.settings = settings
        self.app: Registry = (app if isinstance(app, Registry)
                              else load_app(self.settings.app, demo=self.settings.demo))
        self._migrate = migrate
        self._db: Database | None = None
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self.aio = AsyncSyncBridge(self)

    @classmethod
    def from_env(cls, app: Registry | str | None = None, **overrides: Any) -> SyncBridge:
        """Everything from SYNCBRIDGE_* variables (the app too, unless given here)."""
        return cls(app=app, **overrides)

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        """The database, opened (and migrated, unless migrate=False) on first use."""
        with self._lock:
            if self._db is None:
                from core.runtime import open_database

                self._db = open_database(self.settings, migrate=self._migrate)
            return self._db

    def close(self) -> None:
        for worker in list(self._workers):
            worker.request_stop()
        with self._lock:
            if self._db is not None:
                self._db.dispose()
                self._db = None

    def __enter__(self) -> SyncBridge:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def job_types(self) -> list[str]:
        return self.app.names()

    # --- verbs -------------------------------------------------------------------------------

    def enqueue(self, job_type: str, entity_id: str, *,
                payload: dict[str, Any] | None = None, correlation_id: str | None = None,
                run_at: float | None = None) -> EnqueueResult:
        """One job (idempotent: an active job for the entity answers with its id and
        created=False). Its retry budget is its type's policy. Raises InvalidInput."""
        return _enqueue.enqueue(self.db, job_type, entity_id, known_types=self.app.names(),
                                max_attempts=self.app.max_attempts(job_type, self.settings),
                                payload=payload, correlation_id=correlation_id, run_at=run_at)

    def enqueue_many(self, job_type: str, items: Iterable[EnqueueItem], *,
                     payload: dict[str, Any] | None = None,
                     run_at: float | None = None) -> EnqueueResults:
        """Many jobs of one type: each item an entity id (with `payload`) or an
        (entity id, payload) pair. One result per item, in order."""
        pairs = [(item, payload) if isinstance(item, str) else (item[0], item[1])
                 for item in items]
        known = self.app.names()
        _enqueue.validate_job_type(job_type, known)
        for entity, _ in pairs:
            _enqueue.validate_entity_id(entity)
        groups: dict[int, tuple[dict[str, Any] | None, list[int]]] = {}
        keys: dict[str, int] = {}
        from core.db import dumps_json

        for n, (_, body) in enumerate(pairs):
            key = dumps_json(body) if body is not None else "null"
            gid = keys.setdefault(key, len(keys))
            groups.setdefault(gid, (body, []))[1].append(n)
        results: list[EnqueueResult | None] = [None] * len(pairs)
        max_attempts = self.app.max_attempts(job_type, self.settings)
        for body, indexes in groups.values():
            out = _enqueue.enqueue_many(self.db, job_type, [pairs[n][0] for n in indexes],
                                        known_types=known, max_attempts=max_attempts,
                                        payload=body, run_at=run_at)
            for n, r in zip(indexes, out, strict=True):
                results[n] = r
        return [r for r in results if r is not None]

    def get(self, job_id: int) -> Job:
        """One job; raises JobNotFound."""
        job = reads.get_job(self.db, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, *, status: str | Sequence[str] = (), job_type: str | None = None,
             search: str | None = None, limit: int = 50) -> Jobs:
        """Jobs, newest first."""
        statuses = (status,) if isinstance(status, str) else tuple(status)
        flt = reads.JobFilter(statuses=statuses, job_type=job_type, search=search)
        return reads.list_jobs(self.db, flt, limit=limit)

    def attempts(self, job_id: int) -> Attempts:
        return reads.attempts_for(self.db, job_id)

    def retry(self, job_id: int) -> None:
        """failed|dead -> pending, a fresh budget (ControlError, DuplicateJob, JobNotFound)."""
        operator_actions.retry(self.db, job_id)

    def cancel(self, job_id: int) -> str:
        """pending|running -> canceled; returns the status it had."""
        return operator_actions.cancel(self.db, job_id)

    def replay(self, job_id: int, *, attempt_number: int | None = None) -> int:
        """failed|dead -> a new pending job (the original's budget); returns its id."""
        return operator_actions.replay(self.db, job_id, attempt_number=attempt_number)

    def metrics(self) -> _metrics.Metrics:
        return _metrics.collect(self.db, self.app.names())

    def worker(self, *, concurrency: int | None = None) -> Worker:
        """A worker for this app (refuses, UpstreamConfigError, when a job type needs an
        upstream without a URL outside demo mode). Run it with `await worker.run()`."""
        return Worker(self.db, self.settings, registry=self.app, concurrency=concurrency)

    def run_worker(self, *, until_empty: bool = False,
                   concurrency: int | None = None) -> WorkerStats:
        """Run a worker in this thread until `stop()` (from another thread), or with
        `until_empty` until nothing is pending or running."""
        worker = self.worker(concurrency=concurrency)
        self._workers.append(worker)
        try:
            return asyncio.run(worker.run(until_empty=until_empty))
        finally:
            self._workers.remove(worker)

    def stop(self, *, force: bool = False) -> None:
        """Ask the workers `run_worker` runs to stop (gracefully, or at once with force)."""
        for worker in list(self._workers):
            worker.request_stop(force=force)


class AsyncSyncBridge:
    """`SyncBridge.aio`: the verbs as coroutines; database calls run in a thread."""

    def __init__(self, sb: SyncBridge) -> None:
        self._sb = sb

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(partial(fn, *args, **kwargs))

    async def enqueue(self, job_type: str, entity_id: str, **kwargs: Any) -> EnqueueResult:
        return await self._call(self._sb.enqueue, job_type, entity_id, **kwargs)

    async def enqueue_many(self, job_type: str, items: Iterable[EnqueueItem],
                           **kwargs: Any) -> EnqueueResults:
        return await self._call(self._sb.enqueue_many, job_type, list(items), **kwargs)

    async def get(self, job_id: int) -> Job:
        return await self._call(self._sb.get, job_id)

    async def list(self, **kwargs: Any) -> Jobs:
        return await self._call(self._sb.list, **kwargs)

    async def attempts(self, job_id: int) -> Attempts:
        return await self._call(self._sb.attempts, job_id)

    async def retry(self, job_id: int) -> None:
        await self._call(self._sb.retry, job_id)

    async def cancel(self, job_id: int) -> str:
        return await self._call(self._sb.cancel, job_id)

    async def replay(self, job_id: int, *, attempt_number: int | None = None) -> int:
        return await self._call(self._sb.replay, job_id, attempt_number=attempt_number)

    async def metrics(self) -> _metrics.Metrics:
        return await self._call(self._sb.metrics)

    async def run_worker(self, *, until_empty: bool = False,
                         concurrency: int | None = None) -> WorkerStats:
        """Run a worker on the running event loop (its database calls use its own threads)
        until `sb.stop()` or, with `until_empty`, until nothing is pending or running."""
        worker = await self._call(self._sb.worker, concurrency=concurrency)
        self._sb._workers.append(worker)
        try:
            return await worker.run(until_empty=until_empty)
        finally:
            self._sb._workers.remove(worker)

    async def close(self) -> None:
        await self._call(self._sb.close)

    async def __aenter__(self) -> AsyncSyncBridge:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
