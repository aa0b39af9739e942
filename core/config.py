"""Settings, read from SYNCBRIDGE_* environment variables (and overridden by CLI flags)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _EnvParseError


class SettingsError(ValueError):
    """A setting is invalid; the message is one line naming it."""


class UpstreamSettings(BaseModel):
    """One upstream's configuration in SYNCBRIDGE_UPSTREAMS (JSON: {"name": {...}}); each
    field, when set, wins over the app's declaration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    timeout: float | None = Field(None, gt=0, le=600)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        return value.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNCBRIDGE_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///syncbridge.db"
    max_retries: int = Field(3, ge=0, le=100)
    job_backoff_seconds_base: float = Field(1.0, ge=0, le=3600)
    job_backoff_seconds_cap: float = Field(60.0, ge=0, le=86400)
    # Fraction of the delay that may be randomly shaved off, so retries of many jobs
    # that failed together do not hit the upstream together again.
    job_backoff_jitter: float = Field(0.0, ge=0, le=1)
    lease_seconds: float = Field(30.0, gt=0, le=86400)
    # 32: at a 50 ms upstream one process then finishes 3.6x the jobs of 8 with about the
    # same job durations and CPU to spare; at 64 it is CPU-bound (bench/README.md,
    # "Concurrency against a 50 ms upstream"). Lower it for an upstream that limits
    # concurrent requests.
    concurrency: int = Field(32, ge=1, le=1024)
    poll_seconds: float = Field(0.2, gt=0, le=60)
    shutdown_timeout_seconds: float = Field(10.0, ge=0, le=3600)
    http_timeout_seconds: float = Field(10.0, gt=0, le=600)
    crm_url: str | None = None
    billing_url: str | None = None
    log_file: str | None = None
    log_level: str = "info"
    # Demo mode: an upstream without a URL is answered by the in-process mock, and the
    # console seeds the demo scenarios. Off: a worker needing an upstream without a URL
    # refuses to start.
    demo: bool = False
    # The user's app, MODULE[:ATTR] (core.app_loading); unset: the shipped demo app.
    app: str | None = None
    # Upstreams by name, as JSON: {"billing": {"url": ..., "timeout": 5, "headers": {...}}};
    # SYNCBRIDGE_UPSTREAM_<NAME>_URL sets a URL alone (core.integrations.clients).
    upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)
    # HTTP API (`syncbridge serve`): bearer tokens as `name:scope:secret,...` or a JSON list
    # of {"name", "scope", "secret"}; scope is read or write. Unset: open, loopback only.
    api_tokens: str | None = None
    api_idempotency_ttl_seconds: float = Field(86400.0, gt=0, le=30 * 86400)
    api_max_body_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # /metrics serves a snapshot of the database aggregates refreshed this often.
    api_metrics_refresh_seconds: float = Field(10.0, ge=0.05, le=3600)
    # A worker whose heartbeat is older than this is not counted as alive.
    api_worker_fresh_seconds: float = Field(30.0, gt=0, le=86400)
    # Upstream protection (core.upstream_protection): breakers, Retry-After pauses and
    # adaptive rates are on unless this is false; limits are none unless configured here
    # (JSON {"billing": {"rate": 100, "max_in_flight": 8}}), in
    # SYNCBRIDGE_UPSTREAM_<NAME>_RATE / _MAX_IN_FLIGHT, or by the app.
    upstream_protection: bool = True
    upstream_limits: str | None = None
    breaker_failures: int = Field(5, ge=1, le=100_000)
    breaker_window_seconds: float = Field(30.0, gt=0, le=86400)
    breaker_cooldown_seconds: float = Field(5.0, gt=0, le=86400)
    breaker_cooldown_max_seconds: float = Field(60.0, gt=0, le=86400)
    # Retention (core.retention): how long finished jobs (with their attempts) and audit
    # events are kept, as durations ("7d", "12h", "never"/"0" keeps forever). Audit unset:
    # as long as the longest job retention. Per job type: a JSON object such as
    # {"invoice": {"success": "30d", "dead": "never"}}.
    retention_success: str = "7d"
    retention_canceled: str = "7d"
    retention_failed: str = "90d"
    retention_dead: str = "90d"
    retention_audit: str | None = None
    retention_per_type: str | None = None
    # Workers try to prune this often (one at a time across the fleet); 0 turns it off.
    prune_interval_seconds: float = Field(60.0, ge=0, le=86400)

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+", "postgresql:", "postgresql+")):
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return value

    @field_validator("crm_url", "billing_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("retention_success", "retention_canceled", "retention_failed",
                     "retention_dead", "retention_audit")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        from core.retention import parse_duration

        if value is not None:
            parse_duration(value)  # ValueError: one line naming the bad duration
        return value

    @field_validator("retention_per_type")
    @classmethod
    def _per_type(cls, value: str | None) -> str | None:
        from core.retention import parse_per_type

        try:
            parse_per_type(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (None values ignored).

    Raises SettingsError with one line naming the offending setting.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    return _build(clean)


def _build(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        name = f"SYNCBRIDGE_{field.upper()}"
        where = ".".join(str(p) for p in err["loc"][1:])
        raise SettingsError(f"bad setting {name}{': ' + where if where else ''}: "
                            f"{err['msg']}") from None
    except _EnvParseError as exc:  # a complex value (JSON) that does not parse
        text = str(exc)
        field = text.split('"')[1] if text.count('"') >= 2 else "?"
        raise SettingsError(f"bad setting SYNCBRIDGE_{field.upper()}: not valid JSON") from None
