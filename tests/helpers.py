"""Test helpers: waiting on conditions with a deadline (never sleeping on hope), and
`syncbridge` run in this process."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_for(condition: Callable[[], T | Awaitable[T]], timeout: float = 10.0,
                         interval: float = 0.02, message: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


@contextmanager
def _environment(env: Mapping[str, str], drop: tuple[str, ...]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(drop)]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


def in_process(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
               drop: tuple[str, ...] = ("SYNCBRIDGE_",)) -> subprocess.CompletedProcess[str]:
    """`syncbridge ARGS` through the script's own main() in this process: the environment a
    test's subprocess would get (variables starting with `drop` removed, `env` added), the
    standard streams captured, the exit code returned. For what a command prints and exits
    with; the headless worker, the console and anything that configures logging for the
    whole process run as real processes."""
    from syncbridge_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    with _environment(env or {}, drop), redirect_stdout(out), redirect_stderr(err):
        sys.stdin = io.StringIO(stdin or "")
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's --help
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.stdin = saved_stdin
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
