"""SyncBridge engine: a durable, database-backed job queue for CRM -> Billing sync.

`core` never imports Textual or Rich; the console and the CLI are faces over this API.
"""

__version__ = "0.1.0"
