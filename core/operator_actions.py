"""Operator actions: retry, cancel, replay (one job or many) and the audit log.

Each is one guarded conditional update plus an audit record, so operators racing each
other (and the workers) cannot make an illegal transition or two active jobs for one
entity. A cancel is a fenced write (core.leases.fence) on the status and lease token it
read."""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from core import clock, enqueue
from core.attempts import EndedAttempt, close_attempts
from core.db import Database
from core.errors import ControlError, DuplicateJob, JobNotFound
from core.leases import fence
from core.models import attempts_t, audit_t, jobs_t
from core.statuses import ACTIVE_STATUSES, AttemptOutcome, JobStatus

RETRYABLE_FROM = (JobStatus.FAILED, JobStatus.DEAD)
REPLAYABLE_FROM = (JobStatus.FAILED, JobStatus.DEAD)
CANCELABLE_FROM = ACTIVE_STATUSES
# A claim may move a job pending -> running between the cancel's read and its update; the
# cancel then reads again, this many times at most.
CANCEL_ROUNDS = 5


def current_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _audit(conn: Connection, action: str, job_id: int, actor: str, *,
           new_job_id: int | None = None, detail: str | None = None) -> None:
    conn.execute(audit_t.insert().values(at=clock.now(), actor=actor, action=action,
                                         job_id=job_id, new_job_id=new_job_id, detail=detail))


def _status_of(conn: Connection, job_id: int) -> str:
    status = conn.execute(select(jobs_t.c.status).where(jobs_t.c.id == job_id)).scalar()
    if status is None:
        raise JobNotFound(job_id)
    return str(status)


def _active_duplicate(conn: Connection, job_id: int) -> DuplicateJob:
    row = conn.execute(select(jobs_t.c.job_type, jobs_t.c.entity_id)
                       .where(jobs_t.c.id == job_id)).one()
    existing = conn.execute(select(jobs_t.c.id).where(
        jobs_t.c.job_type == row.job_type, jobs_t.c.entity_id == row.entity_id,
        jobs_t.c.status.in_(ACTIVE_STATUSES))).scalar()
    return DuplicateJob(existing or -1, row.job_type, row.entity_id)


def retry(db: Database, job_id: int, *, actor: str | None = None) -> None:
    """failed|dead -> pending: the same job, a fresh retry budget, its history kept."""
    actor = actor or current_actor()
    now = clock.now()
    try:
        with db.write() as conn:
            res = conn.execute(
                update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.status.in_(RETRYABLE_FROM))
                .values(status=JobStatus.PENDING, attempt_count=0, next_run_at=now,
                        finished_at=None, dead_error=None, dead_error_type=None, updated_at=now)
            )
            if res.rowcount != 1:
                status = _status_of(conn, job_id)
                raise ControlError(f"job {job_id} is {status}; only failed or dead jobs "
                                   "can be retried")
            _audit(conn, "retry", job_id, actor)
            db.notify(conn)
    except IntegrityError:
        with db.read() as conn:
            raise _active_duplicate(conn, job_id) from None


def cancel(db: Database, job_id: int, *, actor: str | None = None) -> str:
    """pending|running -> canceled. A running job's worker finds out at its next lease
    renewal and stops; its late result is fenced out. Returns the status it had."""
    actor = actor or current_actor()
    # A claim may move the job pending -> running between our read and our update; the
    # token guard makes the update miss, and we look again.
    for _ in range(CANCEL_ROUNDS):
        now = clock.now()
        with db.write() as conn:
            row = conn.execute(select(jobs_t.c.status, jobs_t.c.lease_token,
                                      jobs_t.c.lease_owner, jobs_t.c.lease_acquired_at)
                               .where(jobs_t.c.id == job_id)).first()
            if row is None:
                raise JobNotFound(job_id)
            if row.status not in CANCELABLE_FROM:
                raise ControlError(f"job {job_id} is {row.status}; only pending or running "
                                   "jobs can be canceled")
            res = conn.execute(
                update(jobs_t)
                .where(*fence(job_id, row.lease_token, JobStatus(row.status)))
                .values(status=JobStatus.CANCELED, finished_at=now, updated_at=now,
                        lease_owner=None, lease_expires_at=None)
            )
            if res.rowcount != 1:
                continue
            if row.status == JobStatus.RUNNING:
                close_attempts(conn, db.is_postgres, [EndedAttempt(
                    job_id, row.lease_token, row.lease_owner or "unknown",
                    row.lease_acquired_at or now, now, None, AttemptOutcome.CANCELED,
                    "Canceled", f"canceled by {actor} while running")])
            _audit(conn, "cancel", job_id, actor, detail=f"was {row.status}")
            return str(row.status)
    raise ControlError(f"job {job_id} kept changing under the cancel; try again")


def replay(db: Database, job_id: int, *, attempt_number: int | None = None,
           actor: str | None = None) -> int:
    """failed|dead -> a NEW pending job linked to the original (and to one of its attempts);
    the original is untouched. Returns the new job's id."""
    actor = actor or current_actor()
    now = clock.now()
    try:
        with db.write() as conn:
            job = conn.execute(select(jobs_t).where(jobs_t.c.id == job_id)).first()
            if job is None:
                raise JobNotFound(job_id)
            if job.status not in REPLAYABLE_FROM:
                raise ControlError(f"job {job_id} is {job.status}; only failed or dead jobs "
                                   "can be replayed")
            q = select(attempts_t.c.id, attempts_t.c.number).where(attempts_t.c.job_id == job_id)
            if attempt_number is not None:
                q = q.where(attempts_t.c.number == attempt_number)
            attempt = conn.execute(q.order_by(attempts_t.c.number.desc()).limit(1)).first()
            if attempt_number is not None and attempt is None:
                raise ControlError(f"job {job_id} has no attempt {attempt_number}")
            new_id = conn.execute(
                jobs_t.insert().values(
                    job_type=job.job_type, entity_id=job.entity_id, status=JobStatus.PENDING,
                    payload=job.payload, correlation_id=enqueue.new_correlation_id(),
                    attempt_count=0, max_attempts=job.max_attempts, next_run_at=now,
                    lease_token=0, is_replay=True, replay_of_job_id=job_id,
                    replay_of_attempt_id=attempt.id if attempt else None,
                    created_at=now, updated_at=now,
                ).returning(jobs_t.c.id)
            ).scalar_one()
            detail = f"attempt {attempt.number}" if attempt else None
            _audit(conn, "replay", job_id, actor, new_job_id=new_id, detail=detail)
            db.notify(conn)
            return int(new_id)
    except IntegrityError:
        with db.read() as conn:
            raise _active_duplicate(conn, job_id) from None


@dataclass(slots=True)
class BulkOutcome:
    done: dict[int, int | None]  # job id -> new job id (replay) or None (retry/cancel)
    refused: dict[int, str]  # job id -> why


def bulk(db: Database, action: str, job_ids: Sequence[int], *, actor: str | None = None
         ) -> BulkOutcome:
    """Apply retry/replay/cancel to many jobs; each one succeeds or is refused on its own."""
    actor = actor or current_actor()
    out = BulkOutcome({}, {})
    for job_id in job_ids:
        try:
            if action == "replay":
                out.done[job_id] = replay(db, job_id, actor=actor)
            elif action == "retry":
                retry(db, job_id, actor=actor)
                out.done[job_id] = None
            elif action == "cancel":
                cancel(db, job_id, actor=actor)
                out.done[job_id] = None
            else:
                raise ValueError(f"unknown action {action!r}")
        except (ControlError, DuplicateJob) as exc:
            out.refused[job_id] = str(exc)
    return out


def audit_log(db: Database, job_id: int | None = None, limit: int = 100) -> list[dict[str, object]]:
    q = select(audit_t).order_by(audit_t.c.id.desc()).limit(limit)
    if job_id is not None:
        q = q.where(audit_t.c.job_id == job_id)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
