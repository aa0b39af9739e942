"""Subcommands that set things up: demo (seed the scenarios), mock-upstream, db upgrade."""

from __future__ import annotations

import argparse
import signal

from syncbridge_tui.commands.common import EXIT_OK, EXIT_USAGE, CliError, open_db, settings_for


def cmd_demo(args: argparse.Namespace) -> int:
    from core.integrations.mock import SCENARIOS
    from syncbridge_tui.demo import seed_demo

    settings = settings_for(args)
    db = open_db(settings)
    for job_type, entity, job_id, created in seed_demo(db, settings):
        expected = next(s[2] for s in SCENARIOS if s[1] == entity)
        state = "enqueued as" if created else "already active as"
        print(f"{job_type:<8} {entity:<10} {state} job {job_id} (expected: {expected})")
    return EXIT_OK


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from core.integrations.mock import MockUpstream

    if not 0 <= args.port <= 65535:
        raise CliError("--port must be between 0 and 65535", EXIT_USAGE)
    try:
        server = MockUpstream().serve(port=args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"mock upstream on http://{host}:{port}", flush=True)
    print(f"export SYNCBRIDGE_CRM_URL=http://{host}:{port}/crm", flush=True)
    print(f"export SYNCBRIDGE_BILLING_URL=http://{host}:{port}/billing", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    if args.db_command != "upgrade":
        raise CliError("say 'syncbridge db upgrade'", EXIT_USAGE)
    from core.migrations import head_revision, upgrade
    from core.runtime import open_database

    settings = settings_for(args)
    db = open_database(settings, migrate=False)
    try:
        ran = upgrade(db)
        print(f"database {db.display_url} {'upgraded to' if ran else 'already at'} "
              f"revision {head_revision()}")
    finally:
        db.dispose()
    return EXIT_OK
