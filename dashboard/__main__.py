"""``python -m dashboard``: serve the operator dashboard on DASHBOARD_HOST:DASHBOARD_PORT."""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from sentry_sdk.integrations.aiohttp import AioHttpIntegration

from dashboard.app import check_bind, create_app
from shared.errors import ConfigError
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import load_settings


def main() -> None:
    """Load settings and serve until SIGTERM/SIGINT."""
    try:
        settings = load_settings()
        check_bind(settings)
    except ConfigError as exc:
        sys.exit(f"dashboard: {exc}")
    setup_logging(settings.log_level, json=settings.production, process="dashboard")
    init_sentry(settings, component="dashboard", integrations=[AioHttpIntegration()])
    host, port = settings.dashboard_host, settings.dashboard_port
    logging.getLogger("dashboard").info("listening on http://%s:%d", host, port)
    web.run_app(create_app(settings), host=host, port=port, print=None, access_log=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
