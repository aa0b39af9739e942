"""`syncbridge check`: is this deployment ready? Loads the app, validates the settings,
connects, confirms the schema is at head (without migrating), and lists the job types with
their policies and the upstreams with their URLs (user info, query values and header values
masked). Starts nothing and writes nothing. Exit 0 when ready, 1 with one line per problem
on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncbridge_tui.commands.common import EXIT_OK, EXIT_RUNTIME, app_for, settings_for, table
from syncbridge_tui.text import clean

if TYPE_CHECKING:
    from core.config import Settings
    from core.handlers import Registry


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("check", parents=[common],
                       help="check the app, settings, database and upstreams; start nothing")
    c.add_argument("--json", action="store_true")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g}s"


def _types(registry: Registry, settings: Settings) -> list[dict[str, Any]]:
    out = []
    for spec in registry.specs():
        p = registry.policy(spec.name, settings)
        out.append({"name": spec.name, "upstreams": list(spec.upstreams),
                    "max_attempts": p.max_attempts, "backoff_base": p.backoff.base,
                    "backoff_cap": p.backoff.cap, "jitter": p.backoff.jitter,
                    "timeout": p.timeout,
                    "retry_on": [f"{t.__module__}.{t.__qualname__}" for t in p.retry_on]})
    return out


def _upstreams(registry: Registry, settings: Settings,
               problems: list[str]) -> list[dict[str, Any]]:
    from core.integrations.clients import (
        UpstreamConfigError,
        resolve_upstream,
        where_to_set,
    )

    used: dict[str, list[str]] = {}
    for spec in registry.specs():
        for name in spec.upstreams:
            used.setdefault(name, []).append(spec.name)
    out = []
    for name, up in registry.upstreams().items():
        try:
            r = resolve_upstream(up, settings)
        except UpstreamConfigError as exc:
            problems.append(str(exc))
            continue
        if r.url is None:
            if settings.demo:
                shown = "(demo: the in-process mock)"
            else:
                shown = "(none)"
                if name in used:
                    problems.append(f"upstream {name!r} (used by {', '.join(used[name])}) has "
                                    f"no URL: set {where_to_set(name, up)}")
        else:
            shown = r.display_url()
        try:
            r.expanded_headers()
        except UpstreamConfigError as exc:
            problems.append(str(exc))
        out.append({"name": name, "url": shown, "url_from": r.url_from or "-",
                    "timeout": r.timeout, "headers": r.display_headers(),
                    "used_by": used.get(name, [])})
    return out


def _database(settings: Settings, problems: list[str]) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    from core.db import DatabaseError
    from core.migrations import current_revision, head_revision
    from core.runtime import open_database

    info: dict[str, Any] = {"reachable": False, "revision": None, "head": head_revision()}
    url = make_url(settings.database_url)
    info["url"] = url.render_as_string(hide_password=True)
    # Connecting to a SQLite file that is not there would create it: a write.
    if (url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            and not Path(url.database or "").exists()):
        problems.append(f"database {info['url']}: the file does not exist "
                        "(`syncbridge db upgrade` creates it)")
        return info
    try:
        db = open_database(settings, migrate=False)
    except DatabaseError as exc:
        problems.append(f"database unreachable: {exc}")
        return info
    try:
        info["reachable"] = True
        info["url"] = db.display_url
        info["revision"] = current_revision(db)
    except DatabaseError as exc:
        problems.append(f"database {db.display_url}: cannot read the schema version: {exc}")
        return info
    finally:
        db.dispose()
    if info["revision"] != info["head"]:
        problems.append(f"database schema is at {info['revision'] or 'nothing (empty)'}, not "
                        f"head {info['head']}: run `syncbridge db upgrade`")
    return info


def cmd_check(args: argparse.Namespace) -> int:
    from core.config import SettingsError
    from core.logging import one_line

    problems: list[str] = []
    report: dict[str, Any] = {}
    try:
        settings = settings_for(args)
    except SettingsError as exc:
        return _finish(args, report, [str(exc)])
    report["app"] = settings.app or "(the demo app)"
    report["demo"] = settings.demo
    try:
        registry = app_for(settings)
    except SettingsError as exc:
        problems.append(str(exc))
        registry = None
    report["database"] = _database(settings, problems)
    if registry is not None and not registry.names():
        # Most likely the app lives in a Registry of its own: it must be named.
        problems.append(f"app {settings.app!r} registers no job type (is it a Registry "
                        "attribute? name it: --app MODULE:ATTR)")
    if registry is not None:
        try:
            report["job_types"] = _types(registry, settings)
            report["upstreams"] = _upstreams(registry, settings, problems)
        except Exception as exc:  # an app that registers something unusable
            problems.append(f"app: {one_line(exc)}")
    return _finish(args, report, problems)


def _finish(args: argparse.Namespace, report: dict[str, Any], problems: list[str]) -> int:
    import json

    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    for problem in problems:
        print(f"syncbridge: problem: {clean(problem)}", file=sys.stderr)
    return EXIT_RUNTIME if problems else EXIT_OK


def _print_report(report: dict[str, Any]) -> None:
    if "app" in report:
        print(f"app: {clean(report['app'])}{' (demo mode)' if report.get('demo') else ''}")
    db = report.get("database")
    if db:
        state = ("unreachable" if not db["reachable"] else
                 "schema at head" if db["revision"] == db["head"] else "schema behind")
        print(f"database: {clean(db['url'])} ({state}; revision {db['revision']}, "
              f"head {db['head']})")
    if "job_types" in report:
        print("\njob types:")
        print(table(["TYPE", "UPSTREAMS", "ATTEMPTS", "BACKOFF", "JITTER", "TIMEOUT",
                     "RETRY ON"],
                    [[clean(t["name"]), ",".join(t["upstreams"]) or "-",
                      str(t["max_attempts"]),
                      f"{t['backoff_base']:g}s..{t['backoff_cap']:g}s", f"{t['jitter']:g}",
                      _seconds(t["timeout"]), ",".join(t["retry_on"]) or "-"]
                     for t in report["job_types"]]))
    if "upstreams" in report:
        print("\nupstreams:")
        print(table(["NAME", "URL", "FROM", "TIMEOUT", "HEADERS"],
                    [[u["name"], clean(u["url"]), u["url_from"], _seconds(u["timeout"]),
                      ", ".join(f"{k}: {v}" for k, v in u["headers"].items()) or "-"]
                     for u in report["upstreams"]]))
    if not report.get("problems"):
        print("\nok: ready")
