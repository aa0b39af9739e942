"""What every subcommand shares: exit codes, the one-line error, settings, the database
(closed when the command ends) and plain-text output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.config import Settings, load_settings

if TYPE_CHECKING:
    from core.db import Database
    from core.handlers import Registry

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_DUPLICATE = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


def settings_for(args: argparse.Namespace, *, concurrency: int | None = None) -> Settings:
    """Settings from the environment, with --db, --app, --demo (and --concurrency) applied."""
    return load_settings(database_url=getattr(args, "db", None), concurrency=concurrency,
                         app=getattr(args, "app", None),
                         demo=True if getattr(args, "demo", False) else None)


def app_for(settings: Settings) -> Registry:
    """The app the settings name (--app / SYNCBRIDGE_APP), else the demo app; AppError (a
    SettingsError: one line, exit 2) when it cannot be loaded."""
    from core.app_loading import load_app

    return load_app(settings.app, demo=settings.demo)


_opened: list[Database] = []


def open_db(settings: Settings) -> Database:
    """The database, migrated; closed by close_opened when the command ends."""
    from core.runtime import open_database

    db = open_database(settings)
    _opened.append(db)
    return db


def close_opened() -> None:
    while _opened:
        _opened.pop().dispose()


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), *(fmt.format(*r) for r in rows)])
