"""Job types and their registry. Built-in types register exactly as a user's would:

    from core.handlers import job_type, JobContext

    @job_type("contact")
    async def sync_contact(ctx: JobContext) -> dict | None:
        ...

A handler returns a JSON-able result (stored on the job) or raises: a SyncError subclass
says whether to retry; any other exception fails the job without retry.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from core.integrations.errors import ValidationError
from core.integrations.http import request_json
from core.schedules import Schedule, make_schedule


@dataclass(slots=True)
class JobContext:
    job_id: int
    job_type: str
    entity_id: str
    payload: dict[str, Any] | None
    correlation_id: str
    attempt: int
    crm: httpx.AsyncClient
    billing: httpx.AsyncClient
    log: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._schedules: dict[str, Schedule] = {}  # recurring schedules (core.schedules)

    def register(self, name: str, handler: Handler) -> Handler:
        if not name or len(name) > 64:
            raise ValueError("job type names are 1 to 64 characters")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler for {name!r} must be an async function")
        self._handlers[name] = handler
        return handler

    def job_type(self, name: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            return self.register(name, handler)

        return decorator

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


registry = Registry()
job_type = registry.job_type


def validated(model: type[BaseModel], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise ValidationError(f"{what} failed validation: {where}: {first['msg']}") from None


class CrmCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    name: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class CrmInvoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    customer_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class BillingAck(BaseModel):
    model_config = ConfigDict(extra="ignore")
    billing_id: str


@job_type("customer")
async def sync_customer(ctx: JobContext) -> dict[str, Any]:
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.crm, "GET", f"/customers/{key}", what="CRM")
    customer = validated(CrmCustomer, raw, "CRM customer")
    body = {"external_id": customer.id, "name": customer.name, "email": customer.email,
            "currency": customer.currency}
    ack = await request_json(ctx.billing, "PUT", f"/customers/{key}", what="Billing",
                             json_body=body)
    return {"billing_id": validated(BillingAck, ack, "Billing answer").billing_id}


@job_type("invoice")
async def sync_invoice(ctx: JobContext) -> dict[str, Any]:
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.crm, "GET", f"/invoices/{key}", what="CRM")
    invoice = validated(CrmInvoice, raw, "CRM invoice")
    body = {"external_id": invoice.id, "customer": invoice.customer_id,
            "amount_cents": invoice.amount_cents, "currency": invoice.currency}
    ack = await request_json(ctx.billing, "PUT", f"/invoices/{key}", what="Billing",
                             json_body=body)
    return {"billing_id": validated(BillingAck, ack, "Billing answer").billing_id}
