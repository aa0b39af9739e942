"""Scheduled and recurring work: durations and instants people type, recurring schedules
declared in the app, and the once-per-slot tick every worker runs.

A schedule's slots are instants: `every` slots are multiples of the interval since the Unix
epoch (UTC), `cron` slots are the cron expression's matches in UTC. A worker's tick inserts
the LATEST slot that is due (never the ones it missed while nobody ran: no catch-up burst)
into `sync_schedule_slots`, whose primary key (schedule, slot_at) makes the slot happen
once across a whole fleet: the slot row and its job are inserted in one transaction, the
row by `INSERT … ON CONFLICT DO NOTHING`, so of two workers ticking the same slot exactly
one inserts it and enqueues. When the schedule's previous job is still active (the
idempotency index on (job_type, entity_id) refuses a second one), the slot is recorded as
skipped: its row's `job_id` is NULL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]
from sqlalchemy import func, select, text

from core import clock
from core.db import Database
from core.enqueue import insert_jobs, validate_entity_id
from core.enqueue import new_correlation_id as new_correlation_id  # (the showcase pins it)
from core.errors import InvalidInput
from core.models import SCHEDULE_NAME_LENGTH, jobs_t, schedule_slots_t

# Slot rows older than this (before the newest slot) are deleted by the tick that inserts
# a new one; they only guard against a worker whose clock is that far behind.
KEEP_SLOTS_SECONDS = 7 * 86400
# How long a worker's schedule loop sleeps at most between ticks (follows clock changes).
MAX_TICK_SECONDS = 1.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> float:
    """'30s', '10m', '2h', '1d' -> seconds (> 0)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"bad duration {value!r}: expected a number and s, m, h or d "
                           "(e.g. 30s, 10m, 2h, 1d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not (0 < seconds < 1e10):
        raise InvalidInput(f"bad duration {value!r}: must be more than zero")
    return seconds


def parse_instant(value: str) -> float:
    """An ISO 8601 date and time WITH a zone ('2026-12-02T09:00:00Z', '…+01:00') ->
    epoch seconds."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"bad time {value!r}: expected ISO 8601 with a zone, "
                           "e.g. 2026-12-02T09:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"bad time {value!r}: give a zone (Z or +HH:MM)")
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    job_type: str
    entity_id: str
    every: float | None = None  # seconds
    cron: str | None = None  # five fields, UTC
    payload: dict[str, Any] | None = None

    @property
    def spec(self) -> str:
        """How it repeats, as shown to people: 'every 10m' or 'cron */5 * * * *'."""
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron {self.cron}"

    def latest_slot(self, now: float) -> float:
        """The latest slot at or before `now`."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        assert self.cron is not None
        # croniter's get_prev from an instant exactly on a slot returns the slot before it:
        # start a hair later so a slot at `now` counts as due.
        it = croniter(self.cron, datetime.fromtimestamp(now + 0.001, UTC))
        return float(it.get_prev(float))

    def next_slot(self, now: float) -> float:
        """The first slot after `now`."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        assert self.cron is not None
        return float(croniter(self.cron, datetime.fromtimestamp(now, UTC)).get_next(float))


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def make_schedule(name: str, job_type: str, *, every: str | float | None = None,
                  cron: str | None = None, entity_id: str | None = None,
                  payload: dict[str, Any] | None = None) -> Schedule:
    """Validate a declaration (`Registry.recurring`); a bad one raises ValueError."""
    if not isinstance(name, str) or not name.strip() or len(name) > SCHEDULE_NAME_LENGTH:
        raise ValueError(f"schedule names are 1 to {SCHEDULE_NAME_LENGTH} characters")
    if not isinstance(job_type, str) or not job_type:
        raise ValueError(f"schedule {name!r}: job_type is required")
    if (every is None) == (cron is None):
        raise ValueError(f"schedule {name!r}: give exactly one of every= or cron=")
    seconds: float | None = None
    try:
        if every is not None:
            seconds = (float(every) if isinstance(every, int | float)
                       else parse_duration(every))
            if not (0 < seconds < 1e10):
                raise InvalidInput("every must be more than zero")
        if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
            raise InvalidInput(f"bad cron expression {cron!r} (five fields, UTC)")
        validate_entity_id(name if entity_id is None else entity_id)
    except InvalidInput as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from None
    return Schedule(name=name, job_type=job_type, entity_id=name if entity_id is None
                    else entity_id, every=seconds,
                    cron=" ".join(cron.split()) if cron else None, payload=payload)


# --- the tick ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SlotOutcome:
    schedule: str
    slot_at: float
    job_id: int | None  # None: skipped, the previous job was still active


_INSERT_SLOT = text("""
INSERT INTO sync_schedule_slots (schedule, slot_at, job_id, created_at)
SELECT CAST(:name AS VARCHAR), CAST(:slot AS DOUBLE PRECISION), NULL,
       CAST(:now AS DOUBLE PRECISION)
WHERE NOT EXISTS (SELECT 1 FROM sync_schedule_slots
                  WHERE schedule = CAST(:name AS VARCHAR)
                    AND slot_at > CAST(:slot AS DOUBLE PRECISION))
ON CONFLICT (schedule, slot_at) DO NOTHING
RETURNING slot_at
""")


def tick(db: Database, schedules: Iterable[Schedule], *,
         max_attempts: int | Callable[[str], int],
         now: float | None = None) -> list[SlotOutcome]:
    """Insert the latest due slot of each schedule, once across every worker; returns the
    slots THIS call inserted (with their job, or None when skipped). `max_attempts` is the
    new job's budget, or a function of its job type (the type's policy)."""
    now = clock.now() if now is None else now
    done: list[SlotOutcome] = []
    for s in schedules:
        slot = s.latest_slot(now)
        with db.write() as conn:
            if conn.execute(_INSERT_SLOT, {"name": s.name, "slot": slot, "now": now}
                            ).first() is None:
                continue  # another worker (or an earlier tick) has this slot, or a newer one
            rows = insert_jobs(conn, db.is_postgres, s.job_type, [[s.entity_id]],
                               [[new_correlation_id()]], s.payload,
                               max_attempts(s.job_type) if callable(max_attempts)
                               else max_attempts, now)
            job_id = rows[0][0] if rows else None
            if job_id is not None:
                conn.execute(schedule_slots_t.update().where(
                    schedule_slots_t.c.schedule == s.name,
                    schedule_slots_t.c.slot_at == slot).values(job_id=job_id))
                db.notify(conn)
            conn.execute(schedule_slots_t.delete().where(
                schedule_slots_t.c.schedule == s.name,
                schedule_slots_t.c.slot_at < slot - KEEP_SLOTS_SECONDS))
        done.append(SlotOutcome(s.name, slot, job_id))
    return done


# --- what the faces show ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScheduleState:
    name: str
    job_type: str
    spec: str
    entity_id: str
    next_slot: float
    last_slot_at: float | None  # None: never ran
    last_job_id: int | None  # None with a last slot: skipped (previous job still active)
    last_job_status: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "job_type": self.job_type, "spec": self.spec,
                "entity_id": self.entity_id, "next_slot": clock.iso(self.next_slot),
                "last_slot": clock.iso(self.last_slot_at), "last_job_id": self.last_job_id,
                "last_job_status": self.last_job_status,
                "skipped": self.last_slot_at is not None and self.last_job_id is None}


def schedule_states(db: Database, schedules: Sequence[Schedule],
                    now: float | None = None) -> list[ScheduleState]:
    """Each schedule with its next slot and its latest recorded slot and job."""
    now = clock.now() if now is None else now
    if not schedules:
        return []
    names = [s.name for s in schedules]
    t = schedule_slots_t
    with db.read() as conn:
        latest = (select(t.c.schedule, func.max(t.c.slot_at).label("slot_at"))
                  .where(t.c.schedule.in_(names)).group_by(t.c.schedule).subquery())
        rows = conn.execute(
            select(t.c.schedule, t.c.slot_at, t.c.job_id, jobs_t.c.status)
            .join(latest, (latest.c.schedule == t.c.schedule)
                  & (latest.c.slot_at == t.c.slot_at))
            .outerjoin(jobs_t, jobs_t.c.id == t.c.job_id)).all()
    last = {r.schedule: r for r in rows}
    out = []
    for s in sorted(schedules, key=lambda s: s.name):
        r = last.get(s.name)
        out.append(ScheduleState(
            name=s.name, job_type=s.job_type, spec=s.spec, entity_id=s.entity_id,
            next_slot=s.next_slot(now), last_slot_at=r.slot_at if r else None,
            last_job_id=r.job_id if r else None, last_job_status=r.status if r else None))
    return out
