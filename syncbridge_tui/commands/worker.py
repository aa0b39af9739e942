"""`syncbridge --worker-only`: core's Worker, headless, until a signal (or --until-empty).

The first SIGINT/SIGTERM stops it gracefully, a second releases in-flight work now
(core.shutdown, shared with the console's worker process)."""

from __future__ import annotations

import argparse
import asyncio

from syncbridge_tui.commands.common import EXIT_OK, app_for, open_db, settings_for


def run_worker(args: argparse.Namespace) -> int:
    from core import logging as sblog
    from core.integrations.clients import resolve_upstreams
    from core.shutdown import stop_on_signals
    from core.worker import Worker

    settings = settings_for(args, concurrency=args.concurrency)
    registry = app_for(settings)
    resolve_upstreams(registry, settings)  # refuse (one line, exit 2) before connecting
    sblog.configure(level=settings.log_level, log_file=settings.log_file)
    db = open_db(settings)
    worker = Worker(db, settings, registry=registry)
    if args.metrics_port is not None:
        from syncbridge_tui import serve_command

        serve_command.attach_worker_metrics(worker, args.metrics_port)
    stop_on_signals(worker)
    asyncio.run(worker.run(until_empty=args.until_empty))
    return EXIT_OK
