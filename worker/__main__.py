"""``python -m worker``: run the worker agent for this host."""

from __future__ import annotations

import logging
import signal
import sys

from shared.redis import sync_client
from shared.startup import start
from worker.agent import Agent, check_unique


def main() -> None:
    """Load settings, refuse bad ones in one line, supervise until SIGTERM/SIGINT."""
    settings = start("worker", component="worker-agent")
    client = sync_client(settings)
    problem = check_unique(client, settings.keys, settings.worker_id)
    if problem:
        sys.exit(f"worker: {problem}")
    agent = Agent(settings, client)
    try:
        agent.serve_metrics()
    except OSError as exc:
        sys.exit(f"worker: cannot serve metrics on port {settings.worker_metrics_port}: {exc.strerror}")
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    logging.getLogger("worker").info(
        "agent %s: %d process(es) x %d threads",
        settings.worker_id,
        settings.worker_processes,
        settings.worker_threads,
    )
    sys.exit(agent.run())


if __name__ == "__main__":
    main()
