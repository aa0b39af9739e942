"""Regenerate the console's screenshots from the seeded demo at a fixed clock.

    python -m syncbridge_tui.screenshots screenshots     # writes screenshots/*.svg

The same scenes drive the snapshot tests (tests/tui), so the README's pictures and the
tested screens are the same screens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

from core.config import Settings, load_settings
from core.db import Database
from core.migrations import upgrade
from syncbridge_tui.app import ConsoleOptions, SyncBridgeApp, create_app
from syncbridge_tui.screens.enqueue import EnqueueScreen
from syncbridge_tui.showcase import (
    SHOWCASE_SCHEDULES,
    SHOWCASE_UPSTREAM_LIMITS,
    seed_showcase,
    showcase_log_events,
)

SIZE = (140, 40)
Scene = Callable[[Pilot[int]], Awaitable[None]]


async def wait_until(pilot: Pilot[int], condition: Callable[[], object], *,
                     timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


def _app(pilot: Pilot[int]) -> SyncBridgeApp:
    app = pilot.app
    assert isinstance(app, SyncBridgeApp)
    return app


async def settle(pilot: Pilot[int]) -> None:
    """Refresh once more and wait until no poll runs or is queued."""
    app = _app(pilot)
    await pilot.pause()
    seen = app.poll_count
    app.request_poll()
    await wait_until(pilot, lambda: app.poll_count > seen and not app._polling
                     and not app._poll_again, what="the console to refresh")
    await pilot.pause()


async def scene_jobs(pilot: Pilot[int]) -> None:
    await settle(pilot)


def _pane(key: str) -> Scene:
    async def scene(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)

    return scene


async def scene_log(pilot: Pilot[int]) -> None:
    app = _app(pilot)
    from core import clock

    for event in showcase_log_events(clock.now()):
        app.log_buffer(event)
    await _pane("5")(pilot)


async def scene_detail(pilot: Pilot[int]) -> None:
    """The dead job c_1002 (job 4): why it died, and its replay link."""
    await settle(pilot)
    _app(pilot).open_detail(4)
    await settle(pilot)


async def scene_confirm(pilot: Pilot[int]) -> None:
    await scene_detail(pilot)
    await pilot.press("p")
    await pilot.pause()


async def scene_enqueue(pilot: Pilot[int]) -> None:
    """The form after entering an entity that already has an active job."""
    await settle(pilot)
    await pilot.press("e")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, EnqueueScreen),
                     what="the enqueue form")
    await pilot.press(*"c_2040", "enter")
    screen = pilot.app.screen
    assert isinstance(screen, EnqueueScreen)
    await wait_until(pilot, lambda: screen.existing_id is not None, what="the duplicate")
    await pilot.pause()


async def scene_help(pilot: Pilot[int]) -> None:
    await settle(pilot)
    await pilot.press("question_mark")
    await pilot.pause()


SCENES: dict[str, Scene] = {
    "jobs": scene_jobs,
    "dead-letters": _pane("2"),
    "metrics": _pane("3"),
    "workers": _pane("4"),
    "log": scene_log,
    "upstreams": _pane("6"),
    "detail": scene_detail,
    "confirm-replay": scene_confirm,
    "enqueue": scene_enqueue,
    "help": scene_help,
}


def showcase_settings(url: str) -> Settings:
    return load_settings(database_url=url, max_retries=3,
                         upstream_limits=SHOWCASE_UPSTREAM_LIMITS)


def build_showcase(directory: Path, *, untrusted: bool = False, read_only: bool = False,
                   actor: str | None = "operator") -> SyncBridgeApp:
    """A seeded SQLite database in `directory` and a console over it at a fixed clock.

    The URL is relative (the caller is in `directory`) so the header is the same
    everywhere: `sqlite:///syncbridge.db`; the upstream controls' actor is fixed too
    (`actor=None`: the OS user, as in a real console).
    """
    os.chdir(directory)
    settings = showcase_settings("sqlite:///syncbridge.db")
    db = Database(settings.database_url)
    upgrade(db)
    now = seed_showcase(db, settings, untrusted=untrusted)
    return create_app(settings, ConsoleOptions(
        read_only=read_only, embedded_worker=False, live=False, clock=lambda: now,
        blink=False, keymap={}, configure_logging=False, schedules=SHOWCASE_SCHEDULES,
        actor=actor), db=db)


async def _shoot(name: str, scene: Scene, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        try:
            app = build_showcase(Path(tmp))
            path = out.resolve() / f"{name}.svg"
            async with app.run_test(size=SIZE) as pilot:
                await scene(pilot)
                await pilot.pause()
                svg = app.export_screenshot(title=f"SyncBridge — {name}")
            app.db.dispose()
        finally:
            os.chdir(cwd)
    path.write_text(svg, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncbridge_tui.screenshots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="screenshots", help="output directory")
    parser.add_argument("--only", action="append", choices=list(SCENES))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # before build_showcase changes directory
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or SCENES:
        path = asyncio.run(_shoot(name, SCENES[name], out))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
