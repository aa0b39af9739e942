"""The mixed job population the load tests enqueue, with each job's expected final state
(from the mock upstream's documented behaviour and DESIGN.md's classification)."""

from __future__ import annotations

# (job type, entity id, expected final status)
FAULTS: list[tuple[str, str, str]] = [
    ("customer", "c_flaky", "success"),  # 503 twice, then 200
    ("invoice", "i_flaky", "success"),
    ("customer", "c_1002", "dead"),  # Billing 429 Retry-After: 1 every time
    ("invoice", "i_2002", "dead"),
    ("customer", "c_invalid", "failed"),  # CRM record fails validation
    ("customer", "x_500", "dead"),
    ("invoice", "x_502", "dead"),
    ("customer", "x_503", "dead"),
    ("invoice", "x_504", "dead"),
    ("customer", "x_429_none", "dead"),
    ("invoice", "x_429_bad", "dead"),
    ("customer", "x_400", "failed"),
    ("invoice", "x_badjson", "failed"),
    ("customer", "x_huge", "failed"),
    ("invoice", "x_markup", "failed"),
    ("customer", "x_slow", "success"),
]


def mixed(n_success: int, n_missing: int, *, start: int = 10_000
          ) -> list[tuple[str, str, str]]:
    """`n_success` known ids split over both types, `n_missing` unknown ids (404), plus
    every fault scenario once."""
    jobs: list[tuple[str, str, str]] = []
    for k in range(n_success):
        if k % 2:
            jobs.append(("invoice", f"i_{start + k}", "success"))
        else:
            jobs.append(("customer", f"c_{start + k}", "success"))
    for k in range(n_missing):
        jobs.append(("customer" if k % 2 else "invoice", f"u_{start + k}", "failed"))
    jobs.extend(FAULTS)
    return jobs
