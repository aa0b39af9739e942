"""The `syncbridge` subcommands and the headless worker: Textual-free, like syncbridge_tui.cli
(nothing here imports textual or rich; the console is opened by cli.run_console only)."""
