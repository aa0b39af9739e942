"""`syncbridge serve` with an app: the API knows the app's job types and their budgets."""

from __future__ import annotations

from collections.abc import Callable

from tests.api.conftest import Server


def test_serve_knows_the_apps_job_types(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(app="tests.apps.sbtestapp:registry")
    c = srv.client
    r = c.post("/api/jobs/hang", json={"entity_id": "h1"})
    assert r.status_code == 201, r.text
    assert r.json()["max_attempts"] == 2  # the type's policy, not the settings' 4
    r = c.post("/api/jobs/flaky/bulk", json={"entity_ids": ["f1", "f2"]})
    assert r.status_code == 200, r.text
    for item in r.json()["results"]:
        job = c.get(f"/api/jobs/{item['job_id']}").json()
        assert job["max_attempts"] == 3
    r = c.post("/api/jobs/customer", json={"entity_id": "c_1"})
    assert r.status_code == 404 and "unknown job type 'customer'" in r.text
