"""Start-up shared by the three ``python -m`` entry points: settings refused in one line,
logging, Sentry, and (for the two web apps) serving an aiohttp app until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from shared import tracing
from shared.errors import ConfigError
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import Settings, load_settings


def start(
    process: str,
    *,
    component: str | None = None,
    check: Callable[[Settings], None] | None = None,
    integrations: Sequence[Any] = (),
) -> Settings:
    """Load settings (exit with one ``process: reason`` line when they are refused or ``check``
    raises ConfigError), then set up logging, Sentry and tracing (service ``opsdeck-<process>``:
    :func:`shared.tracing.configure`) for ``process``."""
    try:
        settings = load_settings()
        if check is not None:
            check(settings)
    except ConfigError as exc:
        sys.exit(f"{process}: {exc}")
    setup_logging(settings.log_level, json=settings.production, process=process)
    init_sentry(settings, component=component or process, integrations=list(integrations))
    tracing.configure(settings, f"opsdeck-{process}")
    return settings


def serve(process: str, app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` on host:port until SIGTERM/SIGINT (no access log: metrics count requests)."""
    logging.getLogger(process).info("listening on http://%s:%d", host, port)
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5)
