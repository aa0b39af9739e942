"""Binding ids and the user's keymap file."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncbridge_tui import keymap


def test_every_binding_has_an_id_unique_within_its_screen() -> None:
    assert all(b.id for b in keymap.bindings(keymap.ALL))
    for group in (keymap.GLOBAL + keymap.LIST, keymap.DETAIL, keymap.MOVE, keymap.LOG,
                  keymap.DIALOG):
        ids = [k.id for k in group]
        assert len(ids) == len(set(ids))
    # One id, one meaning: "retry" in a list and in a job's detail is the same action.
    by_id: dict[str, str] = {}
    for key in keymap.ALL:
        assert by_id.setdefault(key.id, key.action) == key.action, key.id


def test_readme_table_names_every_id() -> None:
    table = keymap.markdown_table()
    for key in keymap.ALL:
        assert f"`{key.id}`" in table


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
