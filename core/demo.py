"""The shipped demo app: `customer` and `invoice` sync jobs from a CRM to Billing, two
upstreams (`crm`, `billing`). It is what `syncbridge` runs without `--app`; in demo mode
(SYNCBRIDGE_DEMO=1, `--demo`) an upstream without a URL is answered by the in-process mock
(core.integrations.mock), and with `--app` the demo's types are added to the app's.

The CRM and Billing URLs keep their own settings, SYNCBRIDGE_CRM_URL and
SYNCBRIDGE_BILLING_URL (core.integrations.clients reads them for these two names).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from core.handlers import JobContext, Registry
from core.integrations.http import request_json, validated

registry = Registry()
registry.upstream("crm")
registry.upstream("billing")
job_type = registry.job_type


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


@job_type("customer", upstreams=("crm", "billing"))
async def sync_customer(ctx: JobContext) -> dict[str, Any]:
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.upstream("crm"), "GET", f"/customers/{key}", what="CRM")
    customer = validated(CrmCustomer, raw, "CRM customer")
    body = {"external_id": customer.id, "name": customer.name, "email": customer.email,
            "currency": customer.currency}
    ack = await request_json(ctx.upstream("billing"), "PUT", f"/customers/{key}", what="Billing",
                             json_body=body)
    return {"billing_id": validated(BillingAck, ack, "Billing answer").billing_id}


@job_type("invoice", upstreams=("crm", "billing"))
async def sync_invoice(ctx: JobContext) -> dict[str, Any]:
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.upstream("crm"), "GET", f"/invoices/{key}", what="CRM")
    invoice = validated(CrmInvoice, raw, "CRM invoice")
    body = {"external_id": invoice.id, "customer": invoice.customer_id,
            "amount_cents": invoice.amount_cents, "currency": invoice.currency}
    ack = await request_json(ctx.upstream("billing"), "PUT", f"/invoices/{key}", what="Billing",
                             json_body=body)
    return {"billing_id": validated(BillingAck, ack, "Billing answer").billing_id}
