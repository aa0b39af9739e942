"""Console fixtures: a seeded SQLite database in tmp_path, a console at a fixed clock with
no worker and no timers (snapshots), or with the real embedded worker (pilot tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from syncbridge_tui.app import SyncBridgeApp
from syncbridge_tui.screenshots import build_showcase

MakeApp = Callable[..., SyncBridgeApp]


@pytest.fixture(autouse=True)
def _keep_structlog_config() -> Iterator[None]:
    """The console configures structlog for the whole process (quiet, into its log pane);
    put back whatever the rest of the test session had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests are `async def` run by anyio's pytest plugin, on asyncio (Textual's)."""
    return "asyncio"


@pytest.fixture
def showcase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeApp]:
    """make(untrusted=False, read_only=False, actor="operator") -> a console over the seeded
    demo history (actor=None: the upstream controls are audited as the OS user).

    The database URL is relative to tmp_path (we chdir there), so the header reads
    `sqlite:///syncbridge.db` in every snapshot.
    """
    monkeypatch.chdir(tmp_path)
    apps: list[SyncBridgeApp] = []

    def make(**kwargs: bool | str | None) -> SyncBridgeApp:
        app = build_showcase(tmp_path, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.db.dispose()
