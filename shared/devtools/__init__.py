"""Developer and operator tooling: the ``opsdeck`` CLI, the dev launcher, embedded Redis, the load
harness, readiness analysis and the deploy client.

No app (coordinator, worker, dashboard) imports this package; tests/test_layout.py keeps it so.
"""
