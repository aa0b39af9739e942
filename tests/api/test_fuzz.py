"""Fuzz the API from its own OpenAPI document (schemathesis, against the ASGI app on a fresh
SQLite database): no server error, and every answer matches the documented schema, status
code and content type. Bounded: a few examples per operation, well under a minute."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from core.api.app import create_app
from core.config import load_settings
from core.runtime import open_database

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

_TMP = Path(tempfile.mkdtemp(prefix="syncbridge-fuzz-"))
_SETTINGS = load_settings(database_url=f"sqlite:///{_TMP}/fuzz.db",
                          api_metrics_refresh_seconds=60)
_DB = open_database(_SETTINGS)
app = create_app(_SETTINGS, _DB)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

class _Errors(logging.Handler):
    """Counts what reaches the last-resort handler (it logs at ERROR): must stay 0."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_ERRORS = _Errors()
logging.getLogger("syncbridge.api").addHandler(_ERRORS)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(checks=CHECKS)
    assert not _ERRORS.records, _ERRORS.records[0].getMessage()
