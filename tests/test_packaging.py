"""The wheel a user installs: built from the repository's files, installed into a fresh
virtualenv, and run from a directory that holds nothing of the repository but the example
app — so the installed package, its migrations and its stylesheet are what runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (its dependencies are the test
    environment's, reached through a .pth file, so nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked files: the build leaves nothing in the checkout, and
    # an untracked file cannot sneak into the wheel.
    src = tmp / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(src)], cwd=tmp)
    [wheel] = dist.glob("syncbridge-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp).stdout.strip())
    # Only the dependencies: a .pth line adds a directory, but the .pth files inside it (the
    # checkout's editable install among them) are not processed.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp)
    return venv


def test_the_wheel_runs_from_a_fresh_virtualenv(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SYNCBRIDGE_") and k != "PYTHONPATH"}
    env["SYNCBRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/wheel.db"
    py = str(installed / "bin" / "python")
    where = json.loads(_run([py, "-c", (
        "import json, pathlib, core, syncbridge_tui;"
        "pkg = pathlib.Path(syncbridge_tui.__file__).parent;"
        "print(json.dumps({'core': core.__file__, 'tcss': [p.name for p in pkg.glob('*.tcss')],"
        "'migrations': sorted(p.name for p in (pathlib.Path(core.__file__).parent"
        " / 'migrations' / 'versions').glob('0*.py'))}))")], cwd=work, env=env).stdout)
    assert Path(where["core"]).is_relative_to(installed), where["core"]
    assert where["tcss"] == ["syncbridge.tcss"]
    shipped = sorted(p.name for p in (ROOT / "core" / "migrations" / "versions").glob("0*.py"))
    assert where["migrations"] == shipped

    syncbridge = str(installed / "bin" / "syncbridge")
    _run([syncbridge, "db", "upgrade"], cwd=work, env=env)
    _run([syncbridge, "--demo", "demo"], cwd=work, env=env)
    _run([syncbridge, "--demo", "--worker-only", "--until-empty"], cwd=work, env=env)
    jobs = json.loads(_run([syncbridge, "--demo", "jobs", "--json", "--limit", "100"], cwd=work,
                           env=env).stdout)
    assert {j["status"] for j in jobs} == {"success", "failed", "dead"}

    # The user's own app, from the current directory, under the installed command.
    app_env = dict(env, SYNCBRIDGE_DATABASE_URL=f"sqlite:///{tmp_path}/app.db",
                   EXAMPLE_CRM_URL="http://127.0.0.1:9/crm",
                   EXAMPLE_BILLING_URL="http://127.0.0.1:9/billing", LEDGER_TOKEN="t")
    _run([syncbridge, "db", "upgrade"], cwd=work, env=app_env)
    checked = _run([syncbridge, "--app", "examples.crm_sync:app", "check"], cwd=work,
                   env=app_env)
    assert "contact" in checked.stdout and "ledger" in checked.stdout, checked.stdout
    made = json.loads(_run([syncbridge, "--app", "examples.crm_sync:app", "enqueue", "contact",
                            "c_1001"], cwd=work, env=app_env).stdout)
    assert made["job_type"] == "contact" and made["status"] == "pending"
