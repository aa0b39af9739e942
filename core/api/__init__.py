"""The HTTP API (`syncbridge serve`): FastAPI routes over core.enqueue, core.reads,
core.operator_actions and core.metrics, RFC 9457 problem documents, bearer tokens,
Idempotency-Key, and the Prometheus exposition (also the headless worker's own,
`--metrics-port`).

Importing this package imports nothing heavy: `core.api.app` needs FastAPI,
`core.api.prometheus` only prometheus_client.
"""
