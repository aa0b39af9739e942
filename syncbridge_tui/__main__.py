from syncbridge_tui.cli import entry

entry()
