"""``python -m coordinator``: serve the API on COORDINATOR_HOST:PORT (``PORT`` wins)."""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from sentry_sdk.integrations.aiohttp import AioHttpIntegration

from coordinator.app import create_app
from shared.errors import ConfigError
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import load_settings


def main() -> None:
    """Load settings, refuse bad ones in one line, and serve until SIGTERM/SIGINT."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"coordinator: {exc}")
    setup_logging(settings.log_level, json=settings.production, process="coordinator")
    init_sentry(settings, component="coordinator", integrations=[AioHttpIntegration()])
    host, port = settings.coordinator_host, settings.coordinator_bind_port
    logging.getLogger("coordinator").info("listening on http://%s:%d", host, port)
    web.run_app(create_app(settings), host=host, port=port, print=None, access_log=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
