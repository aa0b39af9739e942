"""RFC 9457 problem documents: every error the API answers is one of these."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from core.db import mask_url

PROBLEM_MEDIA_TYPE = "application/problem+json"
_secrets: set[str] = set()


class Problem(BaseModel):
    """An error, as application/problem+json (RFC 9457). Some carry extra members:
    `existing_job_id` (a duplicate), `errors` (what failed validation)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def add_secret(secret: str | None) -> None:
    """Text that must never appear in an answer (a database password)."""
    if secret:
        _secrets.add(secret)


def redact(text: str) -> str:
    text = mask_url(text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


class ApiProblem(Exception):
    def __init__(self, status: int, detail: str, *, slug: str | None = None,
                 title: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> Response:
        return problem_response(self.status, self.detail, slug=self.slug, title=self.title,
                                headers=self.headers, **self.extra)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def problem_response(status: int, detail: str, *, slug: str | None = None,
                     title: str | None = None, headers: dict[str, str] | None = None,
                     **extra: Any) -> Response:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    title = title or phrase
    body = {
        # A plain HTTP error is about:blank (RFC 9457 4.2); our own kinds have a type.
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": redact(detail),
        **extra,
    }
    # ASCII escapes: a detail quoting bad input (a lone surrogate) still encodes.
    content = json.dumps(body, ensure_ascii=True, allow_nan=False).encode()
    return Response(content, status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=headers)
