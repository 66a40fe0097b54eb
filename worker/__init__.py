"""The worker: Dramatiq actors for all Opsdeck work, and the per-host agent that runs them."""
