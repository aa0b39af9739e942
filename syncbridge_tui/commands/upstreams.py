"""`syncbridge upstreams` and `syncbridge upstream pause|resume|reset|open NAME`: the fleet's
upstream protection, shown and controlled (core.upstream_protection). Textual-free."""

from __future__ import annotations

import argparse
import re

from core import operator_actions
from core import upstream_protection as up
from core.config import Settings
from core.db import Database
from syncbridge_tui.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    open_db,
    print_json,
    settings_for,
    table,
)
from syncbridge_tui.text import clean, until

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """'30s', '5m', '1.5h', '250ms' or plain seconds -> seconds (argparse type)."""
    m = _DURATION.match(text.strip())
    seconds = float(m.group(1)) * _UNIT[m.group(2)] if m else 0.0
    if not m or not 0 < seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30s, 5m or 1h (up to 7 days), not {text!r}")
    return seconds


def register(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
             common: argparse.ArgumentParser) -> None:
    u = sub.add_parser("upstreams", parents=[common],
                       help="upstream protection: breakers, pauses, limits")
    u.add_argument("--json", action="store_true")
    c = sub.add_parser("upstream", parents=[common],
                       help="pause, resume, reset (close) or open an upstream's breaker")
    actions = c.add_subparsers(dest="upstream_action", metavar="ACTION",
                               parser_class=type(c))
    for name, what in (("pause", "hold every job calling it, fleet-wide"),
                       ("resume", "lift a pause"),
                       ("reset", "close the breaker; forget failures, pause, adaptive rate"),
                       ("open", "open the breaker (one probe after the cool-down)")):
        a = actions.add_parser(name, parents=[common], help=what)
        a.add_argument("name", metavar="NAME")
        if name == "pause":
            a.add_argument("--for", dest="seconds", type=duration, default=3600.0,
                           metavar="DURATION", help="how long (default 1h)")


def _policy(settings: Settings) -> up.Policy:
    return up.Policy.from_settings(settings)


def cmd_upstreams(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    policy = _policy(settings)
    db = open_db(settings)
    found = up.states(db, policy=policy, upstreams_by_type=_types(settings))
    if args.json:
        print_json([s.as_dict() for s in found])
        return EXIT_OK
    print(table(
        ["UPSTREAM", "STATE", "UNTIL", "RATE", "MAX IN FLIGHT", "IN FLIGHT", "WAITING",
         "429s", "5xx", "NEXT PROBE"],
        [[clean(s.name), s.state.replace("_", "-"), until(s.paused_until),
          _rate(s), "-" if s.max_in_flight is None else str(s.max_in_flight),
          str(s.in_flight), str(s.waiting), str(s.recent_429), str(s.recent_5xx),
          until(s.next_probe_at)] for s in found]))
    return EXIT_OK


def _rate(s: up.UpstreamState) -> str:
    if s.configured_rate is not None:
        return f"{s.configured_rate:g}/s"
    if s.current_rate is not None:
        return f"{s.current_rate:.1f}/s (adaptive)"
    return "-"


def _types(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Job type -> upstreams, as the app (--app, else the demo) declares them."""
    from syncbridge_tui.commands.common import app_for

    return up.type_upstreams(app_for(settings))


def cmd_upstream(args: argparse.Namespace) -> int:
    action = getattr(args, "upstream_action", None)
    if action is None:
        raise CliError("give an action: pause, resume, reset or open (see "
                       "'syncbridge upstream --help')", EXIT_USAGE)
    settings = settings_for(args)
    policy = _policy(settings)
    db: Database = open_db(settings)
    by_type = _types(settings)
    known = up.known_upstreams(db, by_type, policy)
    actor = operator_actions.current_actor()
    cooldown = settings.breaker_cooldown_seconds
    kw = dict(actor=actor, known=known, cooldown=cooldown, by_type=by_type)
    try:
        if action == "pause":
            up.pause(db, args.name, args.seconds, **kw)  # type: ignore[arg-type]
            print(f"upstream {clean(args.name)} paused for {args.seconds:g}s")
        elif action == "resume":
            up.resume(db, args.name, **kw)  # type: ignore[arg-type]
            print(f"upstream {clean(args.name)} resumed")
        elif action == "reset":
            up.reset(db, args.name, **kw)  # type: ignore[arg-type]
            print(f"upstream {clean(args.name)} breaker closed")
        else:
            up.open_breaker(db, args.name, **kw)  # type: ignore[arg-type]
            print(f"upstream {clean(args.name)} breaker opened")
    except up.UnknownUpstream as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return EXIT_OK
