"""SyncBridge benchmarks: throughput, retries, bulk enqueue, latency (`python -m bench`) and
the console at a million jobs (`python -m bench.console`). Not tests: nothing here asserts
a timing."""
