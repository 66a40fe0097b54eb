"""Test harness: a real redis-server on a free port (never 6379, never fakeredis), flushed per test,
plus factories for settings, tokens, the coordinator app and real worker agents."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.auth import mint
from shared.devtools.embedded_redis import EmbeddedRedis
from shared.procutil import isolated_env
from shared.settings import Settings
from tests.fake_llm import FakeLLM, running_fake_llm
from tests.helpers import Processes
from tests.rabbitmq import RabbitCluster, RabbitNode, require_rabbitmq

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One redis-server for the whole session, on a free port, AOF on."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    assert server.port != 6379
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session server's URL, flushed before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client on the test Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def base_env(redis_url: str, var_dir: Path, **extra: Any) -> dict[str, str]:
    """Environment for an Opsdeck subprocess under test: fast intervals, short timeouts."""
    env = isolated_env()
    env.update(
        REDIS_URL=redis_url,
        JWT_SECRET=SECRET,
        OPSDECK_VAR_DIR=str(var_dir),
        WORKER_POLL_INTERVAL="0.5",
        WORKER_PROCESSES="1",
        WORKER_THREADS="4",
        BROKER_HEARTBEAT_TIMEOUT="3",
        SHUTDOWN_TIMEOUT="10",
        RETRY_MIN_BACKOFF="0.1",
        RETRY_MAX_BACKOFF="0.5",
        WORKER_METRICS_PORT="0",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(params=["redis"])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """``BROKER_URL`` of the test's processes: None (the Redis broker) unless the test asks for
    RabbitMQ with ``@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)`` (a fresh
    vhost of the session's own RabbitMQ node each time)."""
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("rabbit_url"))
    return None


#: Both transports, for ``parametrize("broker_url", BROKERS, indirect=True)``.
BROKERS = ["redis", "rabbitmq"]
#: Both transports, the RabbitMQ variant only under ``make soak`` (OPSDECK_SOAK=1): for the slowest
#: tests whose transport-specific part other RabbitMQ tests cover, to keep ``make test`` in budget.
BROKERS_SOAK = [
    "redis",
    pytest.param(
        "rabbitmq",
        marks=[
            pytest.mark.soak,
            pytest.mark.skipif(
                os.environ.get("OPSDECK_SOAK") != "1", reason="soak: runs under `make soak` (OPSDECK_SOAK=1)"
            ),
        ],
    ),
]


@pytest.fixture
def env_factory(redis_url: str, tmp_path: Path, broker_url: str | None) -> Callable[..., dict[str, str]]:
    """Build a subprocess environment, overriding any variable by keyword."""
    broker = {"BROKER_URL": broker_url} if broker_url else {}
    return lambda **extra: base_env(redis_url, tmp_path / "var", **{**broker, **extra})


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, broker_url: str | None) -> Settings:
    """Settings matching :func:`base_env` for in-process apps."""
    return Settings(
        redis_url=redis_url,
        broker_url=broker_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        opsdeck_var_dir=tmp_path / "var",
        worker_poll_interval=0.5,
        broker_heartbeat_timeout=3,
    )


@pytest.fixture
def token() -> Callable[..., str]:
    """Mint a token: ``token("tasks:write", sub="alice", ttl=60)``."""

    def make(*scopes: str, sub: str = "tester", ttl: int = 600) -> str:
        return mint(SECRET.encode(), list(scopes), subject=sub, ttl=ttl)

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """Authorization headers for the given scopes (default: read + write)."""
    return lambda *scopes, **kw: {
        "Authorization": f"Bearer {token(*(scopes or ('tasks:write', 'tasks:read')), **kw)}"
    }


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Any:
    """A test client on an in-process coordinator app."""
    from coordinator.app import create_app

    return await aiohttp_client(create_app(settings))


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Start Opsdeck processes; whatever is still running at the end is stopped."""
    if "broker_url" in request.fixturenames:
        # set up first, torn down last: the processes stop before their RabbitMQ vhost is deleted
        # (deleted under them, every consumer errs and sleeps Dramatiq's 3 s restart delay, which
        # the drain then waits out)
        request.getfixturevalue("broker_url")
    group = Processes()
    yield group
    group.stop_all()


@pytest.fixture
def python() -> str:
    """This interpreter."""
    return sys.executable


# --- RabbitMQ (tests/rabbitmq.py): private nodes on free ports, own epmd, cookie and data; ----------
# never the machine's broker on 5672. One node per session (5-8 s to start), a fresh vhost per test.


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One RabbitMQ node (management plugin on) for the whole session; installs it if missing."""
    require_rabbitmq()
    node = RabbitNode(tmp_path_factory.mktemp("rabbit")).start()
    assert node.amqp_port != 5672
    yield node
    node.close(graceful=False)  # a graceful stop costs 6 s on 3.10; the data is thrown away


@pytest.fixture
def rabbit_vhost(rabbit: RabbitNode) -> Iterator[str]:
    """A fresh vhost on the session node (full permissions for ``rabbit.user``), deleted after."""
    name = rabbit.add_vhost()
    yield name
    rabbit.delete_vhost(name)


@pytest.fixture
def rabbit_url(rabbit: RabbitNode, rabbit_vhost: str) -> str:
    """amqp:// URL (with credentials) of this test's own vhost."""
    return rabbit.amqp_url_for(rabbit_vhost)


@pytest.fixture
def rabbit_management_url(rabbit: RabbitNode) -> str:
    """Base URL of the session node's management API (basic auth ``rabbit.user``/``rabbit.password``)."""
    return rabbit.management_url


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three clustered nodes for the session (soak tests); a test that stops a node starts it again."""
    require_rabbitmq()
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster")).start()
    yield cluster
    cluster.stop(graceful=False)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    """A fake OpenAI-compatible server on 127.0.0.1 for the test (tests/fake_llm.py)."""
    with running_fake_llm() as server:
        yield server
