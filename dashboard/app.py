"""``create_app(settings)``: the operator dashboard — pages, JSON API, live stream, security edge.

Routes are one table (:data:`ROUTES`, from :data:`dashboard.routes.PAGES` and
:data:`dashboard.routes.API`) so tests can enumerate them; each row declares its scope, which
:mod:`dashboard.guard` enforces before the handler runs (every route but the public ones —
login, health, static — answers 401 without a session or bearer token). The health and
``/api/`` rows also generate ``/api/openapi.json``.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from dashboard import auth, bandit_view, metrics, pages, stream
from dashboard.appkeys import KEYS, QUEUES, REDIS, SESSIONS, SETTINGS, SOCKETS, STORE
from dashboard.error_pages import error_pages
from dashboard.guard import make_guard, security_headers
from dashboard.routes import API, METRICS_TOKEN_ROUTES, PAGES, SCOPES
from shared import tracing
from shared.errors import ConfigError
from shared.redis import WaitingPool, async_client
from shared.settings import Settings
from shared.taskstore import TaskStore
from shared.transport import queue_admin
from shared.web import REDIS_METRICS, error_middleware, json_parser_errors, setup_redis_metrics

HERE = Path(__file__).resolve().parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: (method, path, handler): the whole router but /metrics and the static files (each row's scope
#: is in :data:`dashboard.routes.SCOPES`).
ROUTES: list[tuple[str, str, Handler]] = [(ep.method, ep.path, ep.handler) for ep in [*PAGES, *API]]


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback bind address without ``DASHBOARD_PASSWORD`` (ConfigError, one line)."""
    host = settings.dashboard_host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and settings.dashboard_password is None:
        raise ConfigError(
            f"refusing to bind the dashboard to {host} without DASHBOARD_PASSWORD; set it, or bind 127.0.0.1"
        )


async def _resources(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = client = async_client(app[SETTINGS], max_connections=32)
    assert isinstance(client.connection_pool, WaitingPool)
    app[REDIS_METRICS].pool = client.connection_pool
    app[STORE] = TaskStore(client, app[SETTINGS])
    app[QUEUES] = admin = queue_admin(app[SETTINGS], client, app[KEYS])
    yield
    aclose = getattr(admin, "aclose", None)  # the RabbitMQ admin keeps a connection
    if aclose is not None:
        await aclose()
    await app[STORE].aclose()
    await client.aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the dashboard app for ``settings``."""
    app = web.Application(
        middlewares=[
            *([tracing.server_middleware] if tracing.enabled() else []),
            metrics.observe,
            error_pages,
            error_middleware,
            make_guard(SCOPES, METRICS_TOKEN_ROUTES),
        ],
        client_max_size=64 * 1024,
    )
    app[SETTINGS] = settings
    metrics.setup(app)
    setup_redis_metrics(app, app[metrics.REGISTRY], "dashboard", settings)  # opsdeck_redis_up and its probe
    json_parser_errors(app)  # aiohttp's own 400s (oversize headers) in the JSON error shape
    app[KEYS] = settings.keys
    app[SESSIONS] = auth.Sessions(settings.jwt_key, settings.dashboard_session_ttl, settings.production)
    app[SOCKETS] = weakref.WeakSet()
    app[bandit_view.EVALUATION] = bandit_view.EvaluationCache()  # the bandit page's, per process
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        filters={"ts": pages.fmt_time, "pretty": pages.fmt_json},
    )
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(stream.poller_ctx)
    app.on_shutdown.append(stream.close_sockets)
    app.on_response_prepare.append(security_headers)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    return app
