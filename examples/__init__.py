"""Example SyncBridge apps: run one with `syncbridge --app examples.crm_sync …`."""
