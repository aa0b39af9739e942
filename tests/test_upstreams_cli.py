"""`syncbridge upstreams`, `syncbridge upstream pause|resume|reset|open` and the held
reason in `syncbridge jobs` on both databases (a listing and a control through real
`syncbridge` processes, the rest through main() in this process); the Prometheus families
of the upstream states."""

from __future__ import annotations

import json
import re

from core import clock
from core import upstream_protection as up
from core.api.prometheus import _upstream_families
from core.db import Database
from tests.helpers import in_process
from tests.test_cli import assert_one_line_error, run


def test_upstream_controls_show_in_the_list_and_the_jobs(db_url: str, db: Database) -> None:
    assert in_process("enqueue", "customer", "c_1", "c_2", "--db", db_url).returncode == 0
    listed = run("upstreams", "--json", db=db_url)
    assert listed.returncode == 0, listed.stderr
    assert [(u["name"], u["state"], u["waiting"]) for u in json.loads(listed.stdout)] == [
        ("billing", "closed", 2), ("crm", "closed", 2)]
    paused = run("upstream", "pause", "billing", "--for", "5m", db=db_url)
    assert paused.returncode == 0 and "billing paused for 300s" in paused.stdout
    # Seconds on, the pause's countdown shows what is left (the commands below run in this
    # process, quicker than a second: the clock is moved on rather than waited for).
    later = clock.now() + 5
    clock.set_clock(lambda: later)
    opened = in_process("upstream", "open", "crm", "--db", db_url)
    assert opened.returncode == 0, opened.stderr
    jobs = in_process("jobs", "--db", db_url)
    assert len(re.findall(r"held: billing paused 2\d\ds, crm open", jobs.stdout)) == 2, \
        jobs.stdout
    text = in_process("upstreams", "--db", db_url).stdout
    assert "billing   paused" in text and "crm       open" in text, text
    assert in_process("upstream", "resume", "billing", "--db", db_url).returncode == 0
    assert in_process("upstream", "reset", "crm", "--db", db_url).returncode == 0
    states = {s.name: s.state for s in up.states(db)}
    assert states == {"billing": "closed", "crm": "closed"}
    assert "held" not in in_process("jobs", "--db", db_url).stdout
    with db.read() as conn:
        from sqlalchemy import select

        from core.models import audit_t

        rows = conn.execute(select(audit_t.c.action, audit_t.c.upstream, audit_t.c.job_id)
                            .order_by(audit_t.c.id)).all()
    assert [tuple(r) for r in rows] == [
        ("upstream.pause", "billing", None), ("upstream.open", "crm", None),
        ("upstream.resume", "billing", None), ("upstream.reset", "crm", None)]


def test_bad_upstream_commands_are_one_line(db_url: str) -> None:
    assert_one_line_error(in_process("upstream", "pause", "nope", "--db", db_url), 2,
                          "unknown upstream 'nope' (known: billing, crm)")
    assert_one_line_error(in_process("upstream", "pause", "crm", "--for", "soon", "--db", db_url),
                          2, "expected a duration like 30s")
    assert_one_line_error(in_process("upstream", "--db", db_url), 2, "give an action")
    assert_one_line_error(in_process("upstream", "close", "crm", "--db", db_url), 2,
                          "invalid choice")


def test_prometheus_families_of_the_upstreams(db: Database) -> None:
    up.ensure_rows(db, ["crm", "billing"])
    up.open_breaker(db, "crm", actor="t", known=["crm", "billing"])
    fams = {f.name: f for f in _upstream_families(up.states(db))}
    state = {(s.labels["upstream"], s.labels["state"]): s.value
             for s in fams["syncbridge_upstream_state"].samples}
    assert state[("crm", "open")] == 1.0 and state[("crm", "closed")] == 0.0
    assert state[("billing", "closed")] == 1.0
    assert "syncbridge_upstream_in_flight" in fams
