"""The command line is Textual-free: scripting commands and the headless worker never
import textual or rich (the console is imported only when it opens).

rich is blocked in the probe's interpreter (`sys.modules["rich"] = None`: any `import rich`
raises ImportError) rather than looked for afterwards: structlog, which core logs with,
imports rich on its own when it can (for its optional pretty tracebacks) and copes
without it. Textual needs rich, so importing the console fails there too; and textual is
checked for by name as well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `syncbridge ARGS...` through the entry point's main(), then says which of the
# console's libraries ended up imported.
PROBE = """
import json, sys
sys.modules["rich"] = None  # an import of rich (or textual, which needs it) fails
from syncbridge_tui.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("textual", "rich") and sys.modules[m] is not None)
print("LOADED=" + json.dumps(loaded))
print("ALEMBIC=" + json.dumps("alembic" in sys.modules))
sys.exit(code)
"""


def probe(*args: str, alembic: list[bool] | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBRIDGE_")}
    env["SYNCBRIDGE_DEMO"] = "1"  # the headless worker runs the demo app on the mock
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOADED="))
    loaded: list[str] = json.loads(line.removeprefix("LOADED="))
    if alembic is not None:
        line = next(x for x in proc.stdout.splitlines() if x.startswith("ALEMBIC="))
        alembic.append(json.loads(line.removeprefix("ALEMBIC=")))
    return loaded


@pytest.mark.parametrize("args", [
    ("jobs", "--limit", "1"),
    ("--worker-only", "--until-empty"),
], ids=["jobs", "headless-worker"])
def test_cli_does_not_import_textual_or_rich(tmp_path: Path, args: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    assert probe(*args, "--db", url) == []


def test_a_command_on_a_database_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    from core.db import Database
    from core.migrations import upgrade

    url = f"sqlite:///{tmp_path}/cli.db"
    db = Database(url)
    try:
        upgrade(db)
    finally:
        db.dispose()
    alembic: list[bool] = []
    assert probe("jobs", "--limit", "1", "--db", url, alembic=alembic) == []
    assert alembic == [False]
