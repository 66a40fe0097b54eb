"""``python -m dashboard``: serve the operator dashboard on DASHBOARD_HOST:DASHBOARD_PORT."""

from __future__ import annotations

from sentry_sdk.integrations.aiohttp import AioHttpIntegration

from dashboard.app import check_bind, create_app
from shared.startup import serve, start


def main() -> None:
    """Load settings (refusing an unsafe bind in one line) and serve until SIGTERM/SIGINT."""
    settings = start("dashboard", check=check_bind, integrations=[AioHttpIntegration()])
    serve("dashboard", create_app(settings), settings.dashboard_host, settings.dashboard_port)


if __name__ == "__main__":
    main()
