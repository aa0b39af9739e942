"""`syncbridge serve` (the HTTP API) and the headless worker's `--metrics-port`.

Kept out of cli.py, and importing nothing heavy until a command runs: FastAPI, uvicorn and
prometheus_client are loaded by the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.worker import Worker


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, not {text!r}")
    return int(text)


def register(parser: argparse.ArgumentParser, sub: Any,
             common: argparse.ArgumentParser) -> None:
    """Add `serve` and the worker's `--metrics-port` to the command line."""
    parser.add_argument("--metrics-port", type=_port, metavar="N",
                        help="with --worker-only: serve this worker's Prometheus metrics on "
                             "127.0.0.1:N")
    s = sub.add_parser("serve", parents=[common], help="serve the HTTP API (FastAPI)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (not loopback: needs SYNCBRIDGE_API_TOKENS)")
    s.add_argument("--port", type=_port, default=8000)


def cmd_serve(args: argparse.Namespace) -> int:
    from core import logging as sblog
    from core.api.auth import TokenConfigError, is_loopback, parse_tokens
    from core.runtime import open_database
    from syncbridge_tui.commands.common import EXIT_OK, EXIT_USAGE, CliError, app_for, settings_for

    settings = settings_for(args)
    registry = app_for(settings)  # --app / SYNCBRIDGE_APP: the job types the API knows
    try:
        tokens = parse_tokens(settings.api_tokens)
    except TokenConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not tokens and not is_loopback(args.host):
        raise CliError(f"refusing to serve on {args.host} without SYNCBRIDGE_API_TOKENS "
                       "(an open API listens on loopback only)", EXIT_USAGE)
    import uvicorn

    from core.api.app import create_app

    sblog.configure(level=settings.log_level, log_file=settings.log_file)
    db = open_database(settings)
    try:
        app = create_app(settings, db, tokens=tokens, registry=registry)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                access_log=False, server_header=False)
        server = uvicorn.Server(config)
        print(f"syncbridge API on http://{args.host}:{args.port} (database "
              f"{db.display_url}, {len(tokens) or 'no'} token(s)); docs at /docs",
              file=sys.stderr, flush=True)
        server.run()
        if not server.started:
            raise CliError(f"cannot listen on {args.host}:{args.port}")
    finally:
        db.dispose()
    return EXIT_OK


def attach_worker_metrics(worker: Worker, port: int) -> None:
    """Serve the worker's own counters and histograms on 127.0.0.1:port."""
    from core.api.prometheus import WorkerMetrics
    from syncbridge_tui.commands.common import CliError

    wm = WorkerMetrics(worker.db)
    try:
        wm.serve(port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    worker.on_claimed = wm.claimed
    worker.on_completed = wm.completed
