"""The FastAPI application: `create_app(settings, db)`. Routes are thin: every rule lives in
core (validation in core.enqueue, transitions in core.operator_actions, figures in core.metrics)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.engine import make_url
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from core import clock, errors, heartbeats, metrics, operator_actions, reads
from core import enqueue as enqueuing
from core.api.auth import OPEN_ACTOR, READ, WRITE, Principal, Token, find_token
from core.api.idempotency import IdempotencyStore, RequestGuard
from core.api.problems import ApiProblem, Problem, add_secret, problem_response, redact
from core.api.prometheus import DatabaseCollector
from core.config import Settings
from core.db import Database, DatabaseError
from core.handlers import Registry
from core.migrations import current_revision, head_revision
from core.models import jobs_t
from core.records import Job

log = logging.getLogger("syncbridge.api")

MAX_JOB_ID = 2**31 - 1  # job ids are 32-bit integers on PostgreSQL
MAX_BULK = 10_000
MAX_BULK_CONTROL = 1_000
JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="job id")]
bearer = HTTPBearer(auto_error=False, description="a token from SYNCBRIDGE_API_TOKENS")


# --- schemas ----------------------------------------------------------------------------------

class JobOut(BaseModel):
    id: int
    job_type: str
    entity_id: str
    status: str
    payload: Any = None
    result: Any = None
    correlation_id: str
    attempt_count: int
    max_attempts: int
    next_run_at: str | None
    lease_owner: str | None
    lease_token: int
    lease_acquired_at: str | None
    lease_expires_at: str | None
    last_error: str | None
    last_error_type: str | None
    dead_error: str | None
    dead_error_type: str | None
    is_replay: bool
    replay_of_job_id: int | None
    replay_of_attempt_id: int | None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None


class JobDetailOut(JobOut):
    replayed_as: list[int]


class AttemptOut(BaseModel):
    id: int
    job_id: int
    number: int
    worker_id: str
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    outcome: str
    error_type: str | None
    error_message: str | None
    http_status: int | None


class AttemptsOut(BaseModel):
    job_id: int
    attempts: list[AttemptOut]


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next (older) page; null on the last page")


RunAt = StrictFloat | StrictInt | StrictStr | None


class EnqueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_id: StrictStr
    payload: dict[str, Any] | None = None
    correlation_id: StrictStr | None = None
    run_at: RunAt = Field(None, description="when the job becomes due: an ISO 8601 time "
                                            "(UTC when no offset) or epoch seconds")


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_id: StrictStr
    payload: dict[str, Any] | None = None


class BulkEnqueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_ids: list[StrictStr] = Field(default_factory=list, max_length=MAX_BULK)
    items: list[BulkItem] = Field(default_factory=list, max_length=MAX_BULK)
    payload: dict[str, Any] | None = Field(None, description="payload for `entity_ids`")
    run_at: RunAt = None


class BulkResult(BaseModel):
    index: int
    entity_id: str
    outcome: Literal["created", "duplicate", "invalid"]
    job_id: int | None = None
    error: str | None = None


class BulkEnqueueOut(BaseModel):
    created: int
    duplicates: int
    invalid: int
    results: list[BulkResult]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempt_id: int | None = Field(None, ge=1, le=MAX_JOB_ID,
                                   description="the attempt's id (from /attempts)")
    attempt_number: int | None = Field(None, ge=1, le=MAX_JOB_ID,
                                       description="or its number within the job")


class ActionOut(BaseModel):
    job_id: int
    action: str
    message: str
    new_job_id: int | None = None


class BulkControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=MAX_JOB_ID)]] = Field(
        min_length=1, max_length=MAX_BULK_CONTROL)


class Refusal(BaseModel):
    job_id: int
    reason: str


class Done(BaseModel):
    job_id: int
    new_job_id: int | None = None


class BulkControlOut(BaseModel):
    action: str
    done: list[Done]
    refused: list[Refusal]


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    started_at: str | None
    last_seen_at: str | None
    state: str
    concurrency: int
    in_flight: int
    processed: int
    fresh: bool


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class AuditOut(BaseModel):
    id: int
    at: str | None
    actor: str
    action: str
    job_id: int | None  # None for an action on an upstream, named in `upstream`
    new_job_id: int | None
    detail: str | None
    upstream: str | None = None


class AuditLogOut(BaseModel):
    events: list[AuditOut]


class Health(BaseModel):
    status: str
    revision: str | None = None


# --- helpers ----------------------------------------------------------------------------------

def _job_out(job: Job) -> JobOut:
    return JobOut(**job.to_dict())


def _parse_run_at(value: float | int | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise errors.InvalidInput("run_at must be an ISO 8601 time or epoch seconds"
                                     ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            return when.timestamp()
        except (OverflowError, OSError, ValueError):
            raise errors.InvalidInput("run_at is out of range") from None
    return float(value)


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = data["before"]
        if not isinstance(before, int) or isinstance(before, bool) or before < 1:
            raise ValueError
        return before
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiProblem(400, "cursor is not one this API gave out", slug="bad-cursor"
                         ) from None


def _check_job_type(job_type: str, known: list[str]) -> str:
    if job_type not in known:
        raise ApiProblem(404, f"unknown job type {job_type!r} (known: {', '.join(known)})",
                         slug="unknown-job-type")
    return job_type


def _duplicate(job_id: int, message: str) -> ApiProblem:
    return ApiProblem(409, message, slug="duplicate-job", existing_job_id=job_id,
                      headers={"Location": f"/api/jobs/{job_id}"})


# --- the app ----------------------------------------------------------------------------------

_PROBLEM_CONTENT = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def create_app(settings: Settings, db: Database, *, tokens: list[Token] | None = None,
               known_types: Callable[[], list[str]] | None = None,
               registry: Registry | None = None) -> FastAPI:
    """`registry`: the app (its job types and their policies); None: the app the settings
    name (SYNCBRIDGE_APP), else the demo app."""
    from core.app_loading import load_app

    tokens = tokens or []
    app_registry = registry if registry is not None else load_app(settings.app,
                                                                   demo=settings.demo)
    types = known_types or app_registry.names

    def max_attempts(job_type: str) -> int:
        return app_registry.max_attempts(job_type, settings)
    try:
        add_secret(make_url(settings.database_url).password)
    except Exception:  # a malformed URL never reached this far; nothing to hide then
        pass
    collector = DatabaseCollector(db, refresh_seconds=settings.api_metrics_refresh_seconds,
                                  worker_fresh_seconds=settings.api_worker_fresh_seconds)
    prom = CollectorRegistry(auto_describe=False)
    prom.register(collector)
    store = IdempotencyStore(db, settings.api_idempotency_ttl_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        collector.start()  # the first snapshot is ready before the first scrape, mostly
        yield
        collector.stop()

    app = FastAPI(
        title="SyncBridge API",
        version="1",
        description="Durable background jobs over HTTP: enqueue, inspect, retry, cancel, "
                    "replay. Errors are application/problem+json (RFC 9457).",
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.collector = collector

    # --- access --------------------------------------------------------------------------------
    def principal_from(authorization: str | None) -> Principal | None:
        """None when the header does not name a valid token."""
        if not tokens:
            return Principal(OPEN_ACTOR, WRITE)
        if not authorization:
            return None
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        token = find_token(tokens, secret.strip())
        return Principal(token.name, token.scope) if token else None

    def need(scope: str) -> Callable[..., Principal]:
        def check(creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
                  ) -> Principal:
            if not tokens:
                return Principal(OPEN_ACTOR, WRITE)
            if creds is None:
                raise ApiProblem(401, "a bearer token is required", slug="unauthorized",
                                 headers={"WWW-Authenticate": "Bearer"})
            who = principal_from(f"Bearer {creds.credentials}")
            if who is None:
                raise ApiProblem(401, "the bearer token is not valid", slug="unauthorized",
                                 headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if scope == WRITE and who.scope != WRITE:
                raise ApiProblem(403, f"token {who.name!r} may only read", slug="forbidden")
            return who
        return check

    reader = Depends(need(READ))
    writer = Depends(need(WRITE))

    def principal_of(headers: dict[bytes, bytes]) -> str | None:
        raw = headers.get(b"authorization")
        who = principal_from(raw.decode("latin-1") if raw is not None else None)
        return who.name if who else None

    app.add_middleware(RequestGuard, max_body=settings.api_max_body_bytes,
                       store=lambda: store, principal_of=principal_of)

    # --- errors --------------------------------------------------------------------------------
    @app.exception_handler(ApiProblem)
    async def _problem(_r: Request, exc: ApiProblem) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route"
        elif exc.status_code == 405:
            detail = "method not allowed on this route"
        return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(400, "the body is not valid JSON", slug="malformed-json")
        if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), str | bytes)
               for e in errors):
            return problem_response(400, "the body must be a JSON object sent as "
                                         "Content-Type: application/json", slug="malformed-json")
        listed = [{"loc": ".".join(str(p) for p in e.get("loc", ())),
                   "msg": str(e.get("msg", ""))} for e in errors[:20]]
        first = listed[0] if listed else {"loc": "?", "msg": "invalid"}
        return problem_response(422, f"{first['loc']}: {first['msg']}", slug="invalid-request",
                                errors=listed)

    @app.exception_handler(errors.InvalidInput)
    async def _bad_input(_r: Request, exc: errors.InvalidInput) -> Response:
        return problem_response(422, str(exc), slug="invalid-input")

    @app.exception_handler(errors.JobNotFound)
    async def _not_found(_r: Request, exc: errors.JobNotFound) -> Response:
        return problem_response(404, str(exc), slug="job-not-found")

    @app.exception_handler(errors.ControlError)
    async def _refused(_r: Request, exc: errors.ControlError) -> Response:
        return problem_response(409, str(exc), slug="refused")

    @app.exception_handler(errors.DuplicateJob)
    async def _dup(_r: Request, exc: errors.DuplicateJob) -> Response:
        return _duplicate(exc.existing_id, str(exc)).response()

    @app.exception_handler(DatabaseError)
    async def _db_down(_r: Request, exc: DatabaseError) -> Response:
        log.warning("database error: %s", redact(str(exc)))
        return problem_response(503, redact(str(exc)), slug="database-unavailable",
                                headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _last_resort(_r: Request, exc: Exception) -> Response:
        log.error("unexpected %s while answering a request", type(exc).__name__,
                  exc_info=exc)
        return problem_response(500, "internal error; the server log has the details",
                                slug="internal-error")

    # --- jobs ----------------------------------------------------------------------------------
    @app.post("/api/jobs/{job_type}", status_code=201, response_model=JobOut, tags=["jobs"],
              summary="Enqueue one job (409 with the existing job's id if one is active)")
    def enqueue(job_type: str, body: EnqueueIn, response: Response,
                who: Principal = writer,
                idempotency_key: str | None = Header(None, max_length=255)) -> JobOut:
        known = types()
        _check_job_type(job_type, known)
        [r] = enqueuing.enqueue_many(db, job_type, [body.entity_id], known_types=known,
                                 max_attempts=max_attempts(job_type), payload=body.payload,
                                 correlation_id=body.correlation_id,
                                 run_at=_parse_run_at(body.run_at))
        if not r.created:
            raise _duplicate(r.job_id, f"an active {job_type} job for "
                                             f"{body.entity_id!r} already exists: job {r.job_id}")
        job = reads.get_job(db, r.job_id)
        if job is None:  # finished and purged in between: cannot happen (no purge), but say so
            raise ApiProblem(404, f"job {r.job_id} not found", slug="job-not-found")
        response.headers["Location"] = f"/api/jobs/{job.id}"
        return _job_out(job)

    @app.post("/api/jobs/{job_type}/bulk", response_model=BulkEnqueueOut, tags=["jobs"],
              summary="Enqueue many jobs; a result per item")
    def enqueue_bulk(job_type: str, body: BulkEnqueueIn, who: Principal = writer,
                     idempotency_key: str | None = Header(None, max_length=255)
                     ) -> BulkEnqueueOut:
        known = types()
        _check_job_type(job_type, known)
        run_at = _parse_run_at(body.run_at)
        if run_at is not None:
            enqueuing.enqueue_many(db, job_type, [], known_types=known, max_attempts=1,
                               run_at=run_at)  # validates run_at alone, writes nothing
        items = [(e, body.payload) for e in body.entity_ids] + \
                [(i.entity_id, i.payload) for i in body.items]
        if not items:
            raise ApiProblem(422, "give entity_ids or items", slug="invalid-input")
        if len(items) > MAX_BULK:
            raise ApiProblem(422, f"at most {MAX_BULK} items per request", slug="invalid-input")
        results: list[BulkResult | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        payloads: dict[str, dict[str, Any] | None] = {}
        for n, (entity, payload) in enumerate(items):
            try:
                enqueuing.validate_entity_id(entity)
                if payload is not None:
                    json.dumps(payload, allow_nan=False, ensure_ascii=False).encode()
            except errors.InvalidInput as exc:
                results[n] = BulkResult(index=n, entity_id=entity.encode(
                    "utf-8", "replace").decode(), outcome="invalid", error=str(exc))
                continue
            except (TypeError, ValueError) as exc:
                results[n] = BulkResult(index=n, entity_id=entity, outcome="invalid",
                                        error=f"payload is not strict JSON: {exc}")
                continue
            key = json.dumps(payload, sort_keys=True)
            groups.setdefault(key, []).append(n)
            payloads[key] = payload
        for key, indexes in groups.items():
            out = enqueuing.enqueue_many(db, job_type, [items[n][0] for n in indexes],
                                     known_types=known, max_attempts=max_attempts(job_type),
                                     payload=payloads[key], run_at=run_at)
            seen: set[int] = set()
            for n, r in zip(indexes, out, strict=True):
                # An id given twice in one request is one job: created once, then duplicate.
                created = r.created and r.job_id not in seen
                seen.add(r.job_id)
                results[n] = BulkResult(index=n, entity_id=r.entity_id, job_id=r.job_id,
                                        outcome="created" if created else "duplicate")
        final = [r for r in results if r is not None]
        return BulkEnqueueOut(
            created=sum(r.outcome == "created" for r in final),
            duplicates=sum(r.outcome == "duplicate" for r in final),
            invalid=sum(r.outcome == "invalid" for r in final), results=final)

    @app.get("/api/jobs", response_model=JobPage, tags=["jobs"],
             summary="List jobs, newest first, keyset-paged by an opaque cursor")
    def list_jobs(
        who: Principal = reader,
        status: Annotated[list[str] | None, Query()] = None,
        job_type: Annotated[str | None, Query(alias="type", max_length=64)] = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> JobPage:
        if job_type is not None:
            enqueuing.validate_job_type(job_type, types())
        flt = reads.JobFilter(statuses=tuple(status or ()), job_type=job_type, search=search)
        cond = flt.conditions_for(db)
        if cursor is not None:
            cond.append(jobs_t.c.id < _decode_cursor(cursor))
        stmt = select(jobs_t).where(*cond).order_by(jobs_t.c.id.desc()).limit(limit + 1)
        with db.read() as conn:
            jobs = [Job.from_row(r) for r in conn.execute(stmt)]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return JobPage(jobs=[_job_out(j) for j in jobs],
                       next_cursor=_encode_cursor(jobs[-1].id) if more else None)

    def _get(job_id: int) -> Job:
        job = reads.get_job(db, job_id)
        if job is None:
            raise ApiProblem(404, f"job {job_id} not found", slug="job-not-found")
        return job

    @app.get("/api/jobs/{job_id}", response_model=JobDetailOut, tags=["jobs"],
             summary="One job")
    def show(job_id: JobId, who: Principal = reader) -> JobDetailOut:
        job = _get(job_id)
        return JobDetailOut(**job.to_dict(), replayed_as=reads.replays_of(db, job_id))

    @app.get("/api/jobs/{job_id}/attempts", response_model=AttemptsOut, tags=["jobs"],
             summary="A job's attempts, the one in flight included")
    def attempts(job_id: JobId, who: Principal = reader) -> AttemptsOut:
        _get(job_id)
        return AttemptsOut(job_id=job_id, attempts=[
            AttemptOut(**a.to_dict()) for a in reads.attempts_for(db, job_id)])

    # --- control -------------------------------------------------------------------------------
    @app.post("/api/jobs/{job_id}/retry", response_model=ActionOut, tags=["control"],
              summary="failed|dead -> pending (409 with the reason otherwise)")
    def retry(job_id: JobId, who: Principal = writer,
              idempotency_key: str | None = Header(None, max_length=255)) -> ActionOut:
        operator_actions.retry(db, job_id, actor=who.name)
        return ActionOut(job_id=job_id, action="retry", message=f"job {job_id} queued again")

    @app.post("/api/jobs/{job_id}/cancel", response_model=ActionOut, tags=["control"],
              summary="pending|running -> canceled (409 with the reason otherwise)")
    def cancel(job_id: JobId, who: Principal = writer,
               idempotency_key: str | None = Header(None, max_length=255)) -> ActionOut:
        was = operator_actions.cancel(db, job_id, actor=who.name)
        return ActionOut(job_id=job_id, action="cancel",
                         message=f"job {job_id} canceled (was {was})")

    @app.post("/api/jobs/{job_id}/replay", response_model=ActionOut, status_code=201,
              tags=["control"], summary="failed|dead -> a new pending job")
    def replay(job_id: JobId, response: Response, who: Principal = writer,
               body: Annotated[ReplayIn | None, Body()] = None,
               idempotency_key: str | None = Header(None, max_length=255)) -> ActionOut:
        number = body.attempt_number if body else None
        if body is not None and body.attempt_id is not None:
            match = [a for a in reads.attempts_for(db, job_id) if a.id == body.attempt_id]
            if not match:
                _get(job_id)
                raise ApiProblem(409, f"job {job_id} has no attempt with id {body.attempt_id}",
                                 slug="refused")
            number = match[0].number
        new_id = operator_actions.replay(db, job_id, attempt_number=number, actor=who.name)
        response.headers["Location"] = f"/api/jobs/{new_id}"
        return ActionOut(job_id=job_id, action="replay", new_job_id=new_id,
                         message=f"job {job_id} replayed as job {new_id}")

    @app.post("/api/bulk/{action}", response_model=BulkControlOut, tags=["control"],
              summary="retry, cancel or replay many jobs; each done or refused on its own")
    def bulk(action: Literal["retry", "cancel", "replay"], body: BulkControlIn,
             who: Principal = writer,
             idempotency_key: str | None = Header(None, max_length=255)) -> BulkControlOut:
        out = operator_actions.bulk(db, action, list(dict.fromkeys(body.ids)), actor=who.name)
        return BulkControlOut(
            action=action,
            done=[Done(job_id=j, new_job_id=n) for j, n in out.done.items()],
            refused=[Refusal(job_id=j, reason=why) for j, why in out.refused.items()])

    # --- queue health --------------------------------------------------------------------------
    @app.get("/api/metrics", tags=["health"], summary="`syncbridge metrics --json`")
    def queue_metrics(who: Principal = reader) -> dict[str, Any]:
        return metrics.collect(db).to_dict()

    @app.get("/api/upstreams", tags=["health"],
             summary="`syncbridge upstreams --json`: breakers, pauses, limits per upstream")
    def upstreams(who: Principal = reader) -> list[dict[str, Any]]:
        from core import upstream_protection as up

        return [s.as_dict() for s in up.states(
            db, policy=up.Policy.from_settings(settings),
            upstreams_by_type=up.type_upstreams(app_registry))]

    @app.get("/api/workers", response_model=WorkersOut, tags=["health"],
             summary="Workers with a heartbeat")
    def workers(who: Principal = reader) -> WorkersOut:
        fresh_after = clock.now() - settings.api_worker_fresh_seconds
        return WorkersOut(workers=[
            WorkerOut(**w.to_dict(), fresh=w.last_seen_at >= fresh_after and
                      w.state != "stopped") for w in heartbeats.list_workers(db)])

    @app.get("/api/audit", response_model=AuditLogOut, tags=["health"],
             summary="The operators' audit log, newest first")
    def audit(who: Principal = reader,
              job_id: Annotated[int | None, Query(ge=1, le=MAX_JOB_ID)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditLogOut:
        return AuditLogOut(events=[
            AuditOut(**{**e, "at": clock.iso(float(e["at"]))})  # type: ignore[arg-type]
            for e in operator_actions.audit_log(db, job_id=job_id, limit=limit)])

    @app.get("/healthz", response_model=Health, tags=["health"],
             summary="The process answers")
    def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"],
             summary="The database answers and its schema is the newest (else 503)")
    def readyz() -> Health:
        head = head_revision()
        try:
            current = current_revision(db)
        except DatabaseError as exc:
            raise ApiProblem(503, f"database unreachable: {exc}", slug="not-ready") from None
        if current != head:
            raise ApiProblem(503, f"database schema is at revision {current}, this server "
                                  f"needs {head} (run 'syncbridge db upgrade')",
                             slug="not-ready")
        return Health(status="ready", revision=current)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(who: Principal = reader) -> Response:
        return Response(generate_latest(prom), media_type=CONTENT_TYPE_LATEST)

    # --- the OpenAPI document: every error is a problem document --------------------------
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        for path in doc.get("paths", {}).values():
            for op in path.values():
                for param in op.get("parameters", []):
                    if param.get("name") == "job_type" and param.get("in") == "path":
                        param["schema"] = {"type": "string", "enum": types(),
                                           "title": "Job Type"}
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                responses["default"] = {"description": "an error (RFC 9457 problem document)",
                                        "content": _PROBLEM_CONTENT}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return app

