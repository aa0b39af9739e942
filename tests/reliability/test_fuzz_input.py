"""Issue 7 (bad input, fuzzed): hypothesis drives enqueue through the core API and the CLI,
and the job search, with arbitrary text (control characters, lone surrogates, NUL, markup,
ANSI escapes, right-to-left marks, very long strings). Each call ends in a clean validation
error or a stored job whose entity id reads back identical; no traceback, no partial row.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core import enqueue, reads
from core.demo import registry
from core.errors import InvalidInput
from core.models import attempts_t, jobs_t
from syncbridge_tui import cli
from tests.reliability import _support as s
from tests.reliability.conftest import backend

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # surrogates and NUL included
NASTY = st.sampled_from(["\x00", "\x1b[31m", "[bold]x[/]", "\u202e", "\ud800", "\ufeff",
                         " ", "\n", "\t", "c_1", "é", "💥", "%", "_", "\\", "'", '"', "--"])
TEXT = st.lists(st.one_of(st.text(ANY_CHAR, max_size=40), NASTY), max_size=5).map("".join)
# Plausible ids: letters, digits, punctuation (markup brackets included), symbols, spaces.
PLAUSIBLE = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1,
                    max_size=60).filter(lambda x: x.strip() == x and x != "")
ENTITY = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, TEXT,
                   st.text(ANY_CHAR, min_size=120, max_size=140))
JOB_TYPE = st.one_of(st.just("customer"), st.just("invoice"), st.just("customer"), TEXT)
CORRELATION = st.one_of(st.none(), st.none(), PLAUSIBLE, TEXT)
JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6)
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FUZZ_CLI = settings(FUZZ, max_examples=80)  # each call opens the database afresh
COUNTS: dict[str, int] = {}


def _rows(db) -> tuple[int, int]:
    with db.read() as conn:
        return (conn.execute(select(func.count()).select_from(jobs_t)).scalar_one(),
                conn.execute(select(func.count()).select_from(attempts_t)).scalar_one())


def _tally(key: str) -> None:
    COUNTS[key] = COUNTS.get(key, 0) + 1


@pytest.fixture
def tally(record, db_url) -> Iterator[None]:
    COUNTS.clear()
    yield
    record(backend=backend(db_url), **dict(sorted(COUNTS.items())))


@FUZZ
@example(job_type="customer", entities=["c_9"], correlation="\ud800", payload=None)
@example(job_type="customer", entities=["c_9"], correlation="a\x00b", payload=None)
@example(job_type="customer", entities=["c_9"], correlation=None, payload={"a": math.nan})
@example(job_type="customer", entities=["c_9"], correlation=None, payload={"a": "\udfff"})
@example(job_type="customer", entities=["ok", "\x00"], correlation=None, payload=None)
@given(job_type=JOB_TYPE, entities=st.lists(ENTITY, min_size=1, max_size=2),
       correlation=CORRELATION, payload=st.one_of(st.none(), JSONABLE))
def test_core_enqueue_fuzzed(db, tally, job_type, entities, correlation, payload):
    before = _rows(db)
    payload = payload if isinstance(payload, dict) or payload is None else {"v": payload}
    try:
        results = enqueue.enqueue_many(db, job_type, entities, known_types=registry.names(),
                                     max_attempts=4, payload=payload,
                                     correlation_id=correlation)
    except InvalidInput as exc:
        _tally("core_rejected")
        assert "\n" not in str(exc)
        assert _rows(db) == before, "a rejected enqueue wrote something"
        return
    _tally("core_stored")
    created = {r.job_id for r in results if r.created}
    assert _rows(db) == (before[0] + len(created), before[1])
    for entity, r in zip(entities, results, strict=True):
        job = reads.get_job(db, r.job_id)
        assert job is not None and job.entity_id == entity and job.job_type == job_type
        if r.job_id in created:
            assert job.payload == payload


@FUZZ
@given(term=st.one_of(TEXT, PLAUSIBLE))
def test_search_fuzzed(db, tally, term):
    s.enqueue(db, "customer", ["c_1", "c_%_\\"], max_attempts=4)
    flt = reads.JobFilter(search=term)
    try:
        jobs = reads.list_jobs(db, flt, limit=20)
        n = reads.count_jobs(db, flt, cap=100)
    except InvalidInput:
        _tally("search_rejected")
        return
    _tally("search_answered")
    assert len(jobs) == min(n, 20)
    if term.strip() in ("c_1", "c_%_\\"):
        assert term.strip() in {j.entity_id for j in jobs}


@FUZZ_CLI
@example(job_type="customer", entities=[], payload=None, correlation=None)
@given(job_type=JOB_TYPE, entities=st.lists(ENTITY, min_size=1, max_size=2),
       payload=st.one_of(st.none(), st.none(), st.none(), TEXT,
                         st.dictionaries(TEXT, JSONABLE, max_size=3).map(json.dumps)),
       correlation=st.one_of(st.none(), st.none(), st.none(), PLAUSIBLE, TEXT))
def test_cli_enqueue_fuzzed(db_url, db, tally, capsys, job_type, entities, payload,
                            correlation):
    argv = ["enqueue", "--db", db_url]
    if payload is not None:
        argv += ["--payload", payload]
    if correlation is not None:
        argv += ["--correlation-id", correlation]
    argv += ["--", job_type, *entities]  # ids may start with "-"
    before = _rows(db)
    code = cli.main(argv)  # any exception escaping main() fails the test
    out, err = capsys.readouterr()
    assert code in (0, 2, 3), (code, err)
    assert "Traceback" not in err
    if code == 2:
        _tally("cli_usage_error")
        assert err.startswith("syncbridge: error: ") and err.count("\n") == 1, err
        assert _rows(db) == before
        return
    _tally("cli_duplicate" if code == 3 else "cli_stored")
    if code == 0 and len(entities) == 1:
        job = json.loads(out)
        stored = reads.get_job(db, job["id"])
        assert stored.entity_id == entities[0] == job["entity_id"]
        if payload is not None:
            assert stored.payload == json.loads(payload)


# Arguments as the operating system hands them over: bytes, not necessarily UTF-8.
RAW_ARGV: list[list[bytes]] = [
    [b"customer", b"\xff\xfe"],
    [b"customer", b"c_\xc3("],
    [b"customer", b"ok_1", b"--correlation-id", b"\xed\xa0\x80"],
    [b"customer", b"ok_2", b"--payload", b'{"a": NaN}'],
    [b"customer", b"ok_3", b"--payload", b'{"a": "\\u0000"}'],
    [b"customer", b"ok_4", b"--payload", b'{"a": "\\ud800"}'],
    [b"customer", b"ok_5", b"--payload", b'{"a": 1e999}'],
    [b"customer", b"\x1b]0;pwned\x07"],
    [b"customer", b"[red]x[/red] \xe2\x80\xae"],
    [b"customer", b"x" * 5000],
    [b"\xff", b"c_1"],
]


@pytest.mark.slow
def test_cli_enqueue_raw_argv_subprocess(db_url, db, record, tmp_path):
    env = s.clean_env(database_url=db_url)
    before = _rows(db)
    runs = [subprocess.Popen([os.fsencode(s.PYTHON), b"-m", b"syncbridge_tui", b"enqueue",
                              *argv], cwd=s.ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for argv in RAW_ARGV]
    results = []  # (argv, exit code, stdout, stderr)
    try:
        for argv, proc in zip(RAW_ARGV, runs, strict=True):
            out, err_bytes = proc.communicate(timeout=60)
            results.append((argv, proc.returncode, out, err_bytes.decode("utf-8", "replace")))
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    codes = [code for _, code, _, _ in results]
    stored = [(argv, json.loads(out)) for argv, code, out, _ in results if code == 0]
    tracebacks = [(argv, err) for argv, _, _, err in results if "Traceback" in err]
    after = _rows(db)
    # A partial row: a job or attempt row the runs added beyond the jobs they reported.
    partial = (after[0] - before[0] - len(stored)) + (after[1] - before[1])
    record(backend=backend(db_url), cases=len(results), exit_codes=codes, stored=len(stored),
           tracebacks=len(tracebacks), partial_rows=partial)
    assert tracebacks == []
    for argv, code, _, err in results:
        assert code in (0, 2, 3), (argv, code, err)
        if code != 0:
            assert err.startswith("syncbridge: error: ") and err.count("\n") == 1, err
    for argv, job in stored:
        assert os.fsencode(job["entity_id"]) == argv[1]
        assert reads.get_job(db, job["id"]).entity_id == job["entity_id"]
    assert partial == 0, "a rejected enqueue wrote a row"
