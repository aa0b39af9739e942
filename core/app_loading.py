"""Loading the user's app: `--app MODULE[:ATTR]` / SYNCBRIDGE_APP.

The current directory is put on sys.path first (a project's own modules import like
they do for `python -m`). ATTR names a `Registry`, or a callable taking no arguments that
returns one; without ATTR the module's registrations in the default registry
(`core.handlers.registry`, the `@job_type` decorator) are the app. No app at all is the
shipped demo app (core.demo). In demo mode an app gets the demo's job types added (the
app's win a name both have).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from core.config import SettingsError
from core.handlers import Registry
from core.handlers import registry as default_registry


class AppError(SettingsError):
    """The app cannot be loaded; the message is one line naming the module and the error."""


def _cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= 300 else text[:299] + "…"


def import_app(spec: str) -> Registry:
    """The Registry `spec` ("module" or "module:attr") names; AppError otherwise."""
    module_name, _, attr = spec.strip().partition(":")
    if not module_name or (":" in spec and not attr):
        raise AppError(f"cannot load app {spec!r}: expected MODULE or MODULE:ATTR")
    _cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppError(f"cannot load app {spec!r}: no module named {exc.name!r} "
                           f"(looked in {os.getcwd()} and the installed packages)") from None
        raise AppError(f"cannot load app {spec!r}: importing {module_name} failed: "
                       f"{_describe(exc)}") from None
    except BaseException as exc:  # the user's module raised while importing
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AppError(f"cannot load app {spec!r}: importing {module_name} failed: "
                       f"{_describe(exc)}") from None
    if not attr:
        return default_registry
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AppError(f"cannot load app {spec!r}: module {module_name} has no "
                           f"attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, Registry):
        return target
    if callable(target):
        try:
            made = target()
        except Exception as exc:
            raise AppError(f"cannot load app {spec!r}: {attr}() failed: "
                           f"{_describe(exc)}") from None
        if isinstance(made, Registry):
            return made
        raise AppError(f"cannot load app {spec!r}: {attr}() returned "
                       f"{type(made).__name__}, not a core.handlers.Registry")
    raise AppError(f"cannot load app {spec!r}: {attr} is a {type(target).__name__}, not a "
                   "core.handlers.Registry or a function returning one")


def load_app(spec: str | Registry | None, *, demo: bool) -> Registry:
    """The registry a command works with: the app `spec` names (or is), else the demo app;
    in demo mode an app gets the demo's job types too."""
    from core import demo as demo_app

    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return demo_app.registry
    app = spec if isinstance(spec, Registry) else import_app(spec)
    if demo:
        return demo_app.registry.merged(app)
    return app
