"""The SyncBridge console (Textual) and the `syncbridge` command line."""
