"""``python -m coordinator``: serve the API on COORDINATOR_HOST:PORT (``PORT`` wins)."""

from __future__ import annotations

from sentry_sdk.integrations.aiohttp import AioHttpIntegration

from coordinator.app import create_app
from shared.startup import serve, start


def main() -> None:
    """Load settings, refuse bad ones in one line, and serve until SIGTERM/SIGINT."""
    settings = start("coordinator", integrations=[AioHttpIntegration()])
    serve("coordinator", create_app(settings), settings.coordinator_host, settings.coordinator_bind_port)


if __name__ == "__main__":
    main()
