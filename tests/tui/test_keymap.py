"""Binding ids and the user's keymap file."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from textual.binding import Binding

from syncbridge_tui import keymap


def test_every_binding_has_an_id_unique_within_its_screen() -> None:
    assert all(b.id for b in keymap.bindings(keymap.ALL))
    for group in (keymap.GLOBAL + keymap.LIST, keymap.GLOBAL + keymap.UPSTREAMS,
                  keymap.DETAIL, keymap.MOVE, keymap.LOG, keymap.DIALOG):
        ids = [k.id for k in group]
        assert len(ids) == len(set(ids))
    # One id, one meaning: "retry" in a list and in a job's detail is the same action.
    by_id: dict[str, str] = {}
    for key in keymap.ALL:
        assert by_id.setdefault(key.id, key.action) == key.action, key.id


README = Path(__file__).resolve().parents[2] / "README.md"
# README's spelling of a key -> Textual's.
KEY_NAMES = {"?": "question_mark", "/": "slash", "*": "asterisk", "esc": "escape"}
# Bindings local to one dialog, closing it; not remappable and not in the README's table.
LOCAL_CLOSERS = {"export.cancel", "enqueue.close", "help.close", "pause.close"}


def _where_classes() -> dict[str, type]:
    """README's "where" words -> the class that really holds those bindings."""
    from syncbridge_tui.app import SyncBridgeApp
    from syncbridge_tui.screens.confirm import ConfirmScreen
    from syncbridge_tui.screens.detail import DetailScreen
    from syncbridge_tui.screens.main import MainScreen
    from syncbridge_tui.widgets.job_list import JobList
    from syncbridge_tui.widgets.log_pane import LogView
    from syncbridge_tui.widgets.upstreams_pane import UpstreamsPane
    from syncbridge_tui.widgets.window_table import WindowTable

    return {"everywhere": SyncBridgeApp, "job lists": JobList, "detail": DetailScreen,
            "confirmations": ConfirmScreen, "tables": WindowTable, "log": LogView,
            "log pane": MainScreen, "upstreams pane": UpstreamsPane}


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def readme_table() -> dict[tuple[str, str], set[str]]:
    """(where, binding id) -> keys, parsed from README.md's key table. Rows pair key groups
    and id groups (`r` / `p` / `c` with `retry` / `replay` / `cancel`, `j` `k` with `down`
    `up`); a single id takes every key of its row; `1`-`5` (en dash) with `a` … `b` is a range."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| key | where | does | binding id |")
    table: dict[tuple[str, str], set[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        key_cell, where_cell, _does, id_cell = [c.strip() for c in line.strip("|").split("|")]
        if not id_cell:
            continue  # Textual's own command palette (checked separately)
        wheres = [w.strip() for w in where_cell.split(",")]
        if "\u2013" in key_cell:  # a range of keys and of ids (an en dash)
            lo, hi = _ticked(key_cell)
            keys = [str(k) for k in range(int(lo), int(hi) + 1)]
            first, last = _ticked(id_cell)
            ids = [first, *[f"{first}#{k}" for k in keys[1:-1]], last]
            pairs = [(i, [k]) for i, k in zip(ids, keys, strict=True)]
        else:
            key_groups = [_ticked(g) for g in key_cell.split(" / ")]
            id_groups = [_ticked(g) for g in id_cell.split(" / ")]
            if len(id_groups) == 1 and len(id_groups[0]) == 1:
                pairs = [(id_groups[0][0], [k for g in key_groups for k in g])]
            else:
                assert len(key_groups) == len(id_groups), line
                pairs = []
                for kg, ig in zip(key_groups, id_groups, strict=True):
                    if len(ig) == 1:
                        pairs.append((ig[0], kg))
                    else:
                        assert len(kg) == len(ig), line
                        pairs += [(i, [k]) for i, k in zip(ig, kg, strict=True)]
        for where in wheres:
            for binding_id, keys_ in pairs:
                table.setdefault((where, binding_id), set()).update(
                    KEY_NAMES.get(k, k) for k in keys_)
    return table


def real_bindings() -> dict[tuple[str, str], set[str]]:
    """(where, binding id) -> keys, from the BINDINGS of the classes that hold them."""
    table: dict[tuple[str, str], set[str]] = {}
    for where, cls in _where_classes().items():
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding) and binding.id, (cls, binding)
            table.setdefault((where, binding.id), set()).update(
                k.strip() for k in binding.key.split(","))
    return table


def test_readme_key_table_matches_the_real_bindings() -> None:
    doc, real = readme_table(), real_bindings()
    # The README abbreviates a range of ids (`pane.jobs` … `pane.log`): match its inner
    # rows to the real bindings by key.
    for (where, binding_id), keys in list(doc.items()):
        if "#" in binding_id:
            del doc[(where, binding_id)]
            (key,) = keys
            matches = [i for (w, i), ks in real.items() if w == where and ks == {key}]
            assert len(matches) == 1, (where, key, matches)
            assert matches[0].split(".")[0] == binding_id.split(".")[0], matches
            doc[(where, matches[0])] = keys
    assert doc == real


def test_every_binding_of_the_console_is_in_the_readme() -> None:
    """No class of the console holds a binding the README's table does not list (other
    than a dialog's own close key)."""
    import syncbridge_tui

    documented = {i for _, i in readme_table()} | LOCAL_CLOSERS
    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(syncbridge_tui.__path__, "syncbridge_tui."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                for binding in obj.__dict__.get("BINDINGS", []):
                    if isinstance(binding, Binding):
                        found[str(binding.id)] = f"{module.__name__}.{obj.__name__}"
    missing = {i: where for i, where in found.items()
               if i not in documented and not i.startswith("pane.")}
    assert found and missing == {}


def test_readme_names_the_command_palette_key() -> None:
    from syncbridge_tui.app import SyncBridgeApp

    row = next(line for line in README.read_text(encoding="utf-8").splitlines()
               if "command palette" in line and line.startswith("|"))
    assert SyncBridgeApp.ENABLE_COMMAND_PALETTE
    assert _ticked(row.split("|")[1]) == [SyncBridgeApp.COMMAND_PALETTE_BINDING]


def test_keymap_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys]\nretry = "R"\nreplay = "P,ctrl+r"\n', encoding="utf-8")
    monkeypatch.setenv("SYNCBRIDGE_KEYMAP", str(path))
    assert keymap.keymap_path() == path
    assert keymap.load_keymap() == {"retry": "R", "replay": "P,ctrl+r"}


def test_default_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCBRIDGE_KEYMAP", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert keymap.keymap_path() == tmp_path / "syncbridge" / "keymap.toml"
    assert keymap.load_keymap() == {}  # no file: defaults


@pytest.mark.parametrize(("content", "error"), [
    ('[keys]\nretyr = "R"\n', "unknown binding id 'retyr'"),
    ('[keys]\nretry = 3\n', "retry must be a key string"),
    ("[keys\n", "keymap"),
])
def test_bad_keymap_files_are_refused_in_one_line(tmp_path: Path, content: str,
                                                  error: str) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(keymap.KeymapError, match=error) as info:
        keymap.load_keymap(path)
    assert "\n" not in str(info.value)
