"""A small SyncBridge app a team could start from: contacts from a directory service into a
ledger, two named upstreams, a timeout, and a recurring sweep.

Run it (README, "Your own app on two workers"):

    syncbridge mock-upstream --port 8700 &       # serves /crm and /billing on 127.0.0.1
    export EXAMPLE_CRM_URL=http://127.0.0.1:8700/crm
    export EXAMPLE_BILLING_URL=http://127.0.0.1:8700/billing
    syncbridge --app examples.crm_sync:app check
    syncbridge --app examples.crm_sync:app --worker-only &
    syncbridge --app examples.crm_sync:app enqueue contact c_1001 c_1002 c_3003

The upstreams' URLs come from the environment, so the same code runs against staging and
production; the ledger's token is read from LEDGER_TOKEN when a worker starts.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from core.handlers import JobContext, Registry
from core.integrations.http import request_json, validated

app = Registry()

app.upstream("directory", url_env="EXAMPLE_CRM_URL", timeout=5.0)
app.upstream("ledger", url_env="EXAMPLE_BILLING_URL", timeout=5.0,
             headers={"Authorization": "Bearer ${LEDGER_TOKEN}"})


class Contact(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    name: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


@app.job_type("contact", upstreams=("directory", "ledger"), max_attempts=5,
              backoff_base=0.5, backoff_cap=30.0, jitter=0.2, timeout=10.0)
async def sync_contact(ctx: JobContext) -> dict[str, Any]:
    """Read the contact from the directory, write it to the ledger."""
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.upstream("directory"), "GET", f"/customers/{key}",
                             what="directory")
    contact = validated(Contact, raw, "directory contact")
    ack = await request_json(ctx.upstream("ledger"), "PUT", f"/customers/{key}",
                             what="ledger", json_body=contact.model_dump())
    return {"ledger_id": ack.get("billing_id") if isinstance(ack, dict) else None}


@app.job_type("contact_check", upstreams=("directory",), max_attempts=2, timeout=1.0)
async def check_contact(ctx: JobContext) -> dict[str, Any]:
    """A quick look-up with a tight timeout: a directory that hangs (the mock's `x_slow`)
    ends the attempt as `timeout`, retried once, then dead."""
    key = quote(ctx.entity_id, safe="")
    raw = await request_json(ctx.upstream("directory"), "GET", f"/customers/{key}",
                             what="directory")
    return {"found": isinstance(raw, dict) and raw.get("id") == ctx.entity_id}


# Once per slot across every worker of the fleet; a restart after downtime enqueues the
# latest slot only. The interval is an environment variable so the walkthrough's test can
# use seconds.
app.recurring("contact-sweep", "contact", every=os.environ.get("EXAMPLE_SWEEP_EVERY", "10m"),
              entity_id="c_9000")
