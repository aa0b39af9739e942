"""Job types, upstreams and their registry: the app a team writes. Register exactly as the
shipped demo (core.demo) does:

    from core.handlers import job_type, JobContext

    @job_type("contact", upstreams=("crm",), max_attempts=5, timeout=30)
    async def sync_contact(ctx: JobContext) -> dict | None:
        client = ctx.upstream("crm")  # an httpx.AsyncClient with the upstream's base URL
        ...

A handler returns a JSON-able result (stored on the job) or raises: a SyncError subclass
says whether to retry (RetryLater carries its own delay); an exception of a class in the
type's `retry_on` is retried too; any other exception fails the job without retry.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.retry_policy import JobPolicy, Policy, resolve_policy
from core.schedules import Schedule, make_schedule

if TYPE_CHECKING:
    import httpx

    from core.config import Settings

_UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(slots=True)
class JobContext:
    job_id: int
    job_type: str
    entity_id: str
    payload: dict[str, Any] | None
    correlation_id: str
    attempt: int
    crm: httpx.AsyncClient | None = None  # the demo's upstreams; prefer ctx.upstream("crm")
    billing: httpx.AsyncClient | None = None
    log: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    upstreams: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def upstream(self, name: str) -> httpx.AsyncClient:
        """The client for an upstream this job type declared (`upstreams=(...)`): base URL,
        timeout and headers from its configuration, X-Correlation-ID added to every request;
        pass it to core.integrations.http.request_json to have failures classified."""
        client = self.upstreams.get(name)
        if client is None and name in ("crm", "billing"):
            client = self.crm if name == "crm" else self.billing
        if client is None:
            raise LookupError(f"job type {self.job_type!r} did not declare upstream {name!r} "
                              f"(declared: {', '.join(sorted(self.upstreams)) or 'none'})")
        return client


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class JobType:
    """A registered job type: its handler, the upstreams it calls and its policy (unset
    policy fields fall back to the settings)."""

    name: str
    handler: Handler
    upstreams: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A named upstream as an app declares it. The URL is `url`, or the environment variable
    `url_env` names it; settings (SYNCBRIDGE_UPSTREAM_<NAME>_URL, SYNCBRIDGE_UPSTREAMS) win
    over both. Header values may say "${VAR}" to read a secret from the environment."""

    name: str
    url: str | None = None
    url_env: str | None = None
    timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, Schedule] = {}  # recurring schedules (core.schedules)
        self._types: dict[str, JobType] = {}  # policies and upstreams, by job type (APP)
        self._upstreams: dict[str, Upstream] = {}

    def register(self, name: str, handler: Handler, *, upstreams: Iterable[str] = (),
                 **policy: Any) -> Handler:
        if not name or len(name) > 64:
            raise ValueError("job type names are 1 to 64 characters")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler for {name!r} must be an async function")
        names = tuple(upstreams)
        for up in names:
            _check_upstream_name(up)
        spec = JobType(name, handler, names, Policy.of(name, **policy))
        self._handlers[name] = handler
        self._types[name] = spec
        return handler

    def job_type(self, name: str, *, upstreams: Iterable[str] = (),
                 max_attempts: int | None = None, backoff_base: float | None = None,
                 backoff_cap: float | None = None, jitter: float | None = None,
                 retry_on: Iterable[type[BaseException]] = (),
                 timeout: float | None = None) -> Callable[[Handler], Handler]:
        """Register the decorated async function as job type `name`. `upstreams` names the
        upstreams it calls (ctx.upstream(name)); the rest is its policy: retry budget
        (attempts in all), backoff base/cap in seconds and jitter (0-1), exception classes
        retried even though they are not a SyncError, and a timeout in seconds after which
        the attempt is cancelled and ends `timeout` (retryable). Unset: the settings'."""
        def decorator(handler: Handler) -> Handler:
            return self.register(name, handler, upstreams=upstreams, max_attempts=max_attempts,
                                 backoff_base=backoff_base, backoff_cap=backoff_cap,
                                 jitter=jitter, retry_on=tuple(retry_on), timeout=timeout)

        return decorator

    # --- upstreams and policies (APP) ----------------------------------------------------------

    def upstream(self, name: str, *, url: str | None = None, url_env: str | None = None,
                 timeout: float | None = None,
                 headers: Mapping[str, str] | None = None) -> Upstream:
        """Declare upstream `name`: base URL (or the environment variable holding it),
        timeout in seconds, and extra headers ("${VAR}" in a value reads the environment
        when the worker starts, e.g. {"Authorization": "Bearer ${BILLING_TOKEN}"})."""
        _check_upstream_name(name)
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {name!r}: url must be an http:// or https:// URL")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"upstream {name!r}: timeout must be more than 0 seconds")
        up = Upstream(name, url.rstrip("/") if url else None, url_env, timeout,
                      dict(headers or {}))
        self._upstreams[name] = up
        return up

    def upstreams(self) -> dict[str, Upstream]:
        """Every upstream a job type calls or the app declared, by name (an upstream only
        named by a job type is an empty declaration: its URL must come from settings)."""
        found = dict(self._upstreams)
        for spec in self._types.values():
            for name in spec.upstreams:
                found.setdefault(name, Upstream(name))
        return dict(sorted(found.items()))

    def spec(self, name: str) -> JobType | None:
        return self._types.get(name)

    def specs(self) -> list[JobType]:
        return [self._types[n] for n in self.names()]

    def policy(self, name: str, settings: Settings) -> JobPolicy:
        """Job type `name`'s policy, unset fields from `settings`."""
        spec = self._types.get(name)
        return resolve_policy(spec.policy if spec else Policy(), settings)

    def max_attempts(self, name: str, settings: Settings) -> int:
        """The retry budget a new job of this type gets (taken at enqueue)."""
        return self.policy(name, settings).max_attempts

    def merged(self, *others: Registry) -> Registry:
        """A new registry with this one's types, upstreams and schedules, then each of
        `others`' (a later one wins a name both have)."""
        out = self.copy()
        for other in others:
            out._handlers.update(other._handlers)
            out._types.update(other._types)
            out._upstreams.update(other._upstreams)
            out._schedules.update(other._schedules)
        return out

    # -------------------------------------------------------------------------------------------

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def copy(self) -> Registry:
        clone = Registry()
        clone._handlers = dict(self._handlers)
        clone._schedules = dict(self._schedules)
        clone._types = dict(self._types)
        clone._upstreams = dict(self._upstreams)
        return clone

    # --- recurring schedules (core.schedules) ---------------------------------------------

    def recurring(self, name: str, job_type: str, *, every: str | float | None = None,
                  cron: str | None = None, entity_id: str | None = None,
                  payload: dict[str, Any] | None = None) -> Schedule:
        """Enqueue `job_type` once per slot across every worker: `every="10m"` (slots are
        multiples of it since the epoch) or `cron="*/5 * * * *"` (UTC). The job's entity is
        `entity_id` (default: the schedule's name). Raises ValueError for a bad one."""
        schedule = make_schedule(name, job_type, every=every, cron=cron,
                                 entity_id=entity_id, payload=payload)
        self._schedules[name] = schedule
        return schedule

    def schedules(self) -> list[Schedule]:
        return [self._schedules[name] for name in sorted(self._schedules)]


def _check_upstream_name(name: str) -> None:
    if not isinstance(name, str) or not _UPSTREAM_NAME.match(name):
        raise ValueError(f"upstream name {name!r}: lower-case letters, digits and _, "
                         "starting with a letter, at most 32")


registry = Registry()
job_type = registry.job_type
upstream = registry.upstream
