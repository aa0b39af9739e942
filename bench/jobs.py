"""The benchmark's job types, registered through the public registry exactly as a user
registers their own (`Registry.job_type` is the same decorator as `core.handlers.job_type`).

A private `Registry` keeps the bench types out of the default one the console and CLI use;
a user who wants theirs everywhere decorates with `core.handlers.job_type` instead.
"""

from __future__ import annotations

import time
from typing import Any

from core.handlers import JobContext, Registry
from core.integrations.errors import UpstreamTimeout

registry = Registry()
NOOP = "bench_noop"
FAIL_ONCE = "bench_fail_once"
PROBE = "bench_probe"

# Latency samples of the probe job: seconds from the enqueue call to the handler's start.
latencies: list[float] = []


@registry.job_type(NOOP)
async def noop(ctx: JobContext) -> dict[str, Any] | None:
    return None


@registry.job_type(FAIL_ONCE)
async def fail_once(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.attempt == 1:  # the lease token is the attempt's ordinal number
        raise UpstreamTimeout("bench: first attempt fails on purpose")
    return None


@registry.job_type(PROBE)
async def probe(ctx: JobContext) -> dict[str, Any] | None:
    latencies.append(time.time() - ctx.payload["t"])  # type: ignore[index]
    return None


# --- an integration job against a real HTTP upstream (bench/concurrency.py) -----------------
#
# A second app, so the job types above keep needing no upstream: its two named upstreams point
# at bench/latency_server.py (the worker sets their URLs through SYNCBRIDGE_UPSTREAMS, like
# a deployment would). The job is the demo's customer job: GET the customer from one
# upstream, validate it, PUT it to the other, validate the answer.

from urllib.parse import quote  # noqa: E402

from core.demo import BillingAck, CrmCustomer  # noqa: E402
from core.integrations.http import request_json, validated  # noqa: E402

# The demo's customer job, against named upstreams (the demo's models, not copies).
UPSTREAM_JOB = "bench_upstream_customer"
upstream_app = Registry()
upstream_app.upstream("bench_crm")
upstream_app.upstream("bench_billing")


@upstream_app.job_type(UPSTREAM_JOB, upstreams=("bench_crm", "bench_billing"))
async def upstream_customer(ctx: JobContext) -> dict[str, Any]:
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.upstream("bench_crm"), "GET", f"/customers/{key}", what="CRM")
    customer = validated(CrmCustomer, raw, "CRM customer")
    body = {"external_id": customer.id, "name": customer.name, "email": customer.email,
            "currency": customer.currency}
    ack = await request_json(ctx.upstream("bench_billing"), "PUT", f"/customers/{key}",
                             what="Billing", json_body=body)
    return {"billing_id": validated(BillingAck, ack, "Billing answer").billing_id}
