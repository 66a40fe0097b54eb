"""Deploy test harness: fake provider servers, a services file pointing at them, and an
in-process rollout driver that runs every scheduled step message at once (delays ignored)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.deploy.models import StepPayload
from shared.settings import Settings
from tests.conftest import SECRET
from tests.deploy.fakes import RENDER_KEY, VERCEL_TOKEN, WEBHOOK_SECRET, Fakes, FakeServer


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fakes(fake_server: FakeServer) -> Fakes:
    """The fake servers, reset for this test."""
    f = fake_server.fakes
    url = f.url
    fresh = Fakes()
    f.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "url"})
    f.url = url
    return f


def services_yaml(url: str, *, pause: float = 0.0, extra: str = "") -> str:
    """A services file with one service per provider, all aimed at the fakes."""
    return f"""
services:
  api:
    provider: webhook
    webhook: {{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET, status_url: "{url}/hook/status"}}
    strategy: canary
    canary: {{steps: [1, 5, 25, 100], pause_seconds: {pause}}}
    gates: {{smoke_urls: ["{url}/health"], timeout_seconds: 2}}
  site:
    provider: render
    render: {{service_id: srv-test, api_key_env: RENDER_API_KEY}}
    strategy: direct
    gates:
      smoke_urls: ["{url}/health"]
      metrics:
        query_url: "{url}/api/v1/query"
        error_rate: {{query: 'error_rate{{service="{{service}}"}}', max: 0.05}}
        p99_seconds: {{query: 'p99{{service="{{service}}"}}', max: 0.5}}
  web:
    provider: vercel
    vercel: {{project_id: prj_test, git_source: {{type: github, repoId: "1", ref: main}}}}
    strategy: canary
    canary: {{steps: [10, 100], pause_seconds: 0}}
    gates: {{smoke_urls: ["{url}/health"]}}
  test:
    provider: webhook
    webhook: {{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET}}
{extra}"""


@pytest.fixture
def deploy_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "DEPLOY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RENDER_API_KEY": RENDER_KEY,
        "VERCEL_TOKEN": VERCEL_TOKEN,
        "VERCEL_TEAM_ID": "team_test",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def services_file(tmp_path: Path, fakes: Fakes) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url))
    return path


@pytest.fixture
def dsettings(redis_url: str, tmp_path: Path, services_file: Path, fakes: Fakes, deploy_env: Any) -> Settings:
    """Settings with the services file active and fast deploy timings."""
    return Settings(
        redis_url=redis_url, jwt_secret=SECRET, opsdeck_var_dir=tmp_path / "var",  # type: ignore[arg-type]
        opsdeck_services=services_file, render_api_url=fakes.url, vercel_api_url=fakes.url,
        deploy_poll_interval=0.02, deploy_lock_ttl=2, deploy_http_retries=2, deploy_http_backoff=0.01,
        deploy_http_timeout=1,
    )  # fmt: skip


class Driver:
    """Runs a Rollout in-process: scheduled messages go to a queue drained by :meth:`run`."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        from worker.deploy.machine import Rollout
        from worker.deploy.state import DeployState

        self.queue: deque[tuple[dict[str, Any], float]] = deque()
        self.sent: list[tuple[dict[str, Any], float]] = []
        self.settings = settings
        self.state = DeployState(client, settings)
        self.rollout = Rollout(self.state, settings, self._schedule)

    def _schedule(self, payload: dict[str, Any], delay: float) -> None:
        self.queue.append((payload, delay))
        self.sent.append((payload, delay))

    def start(self, service: str, task_id: str, **payload: Any) -> str:
        from shared.deploy.models import DeployPayload

        deploy = DeployPayload.model_validate({"service": service, **payload}, context=self.settings)
        self.rollout.start(deploy, task_id, "tester")
        return task_id

    def run(self, limit: int = 200, until: Callable[[], bool] | None = None) -> None:
        for _ in range(limit):
            if not self.queue or (until is not None and until()):
                return
            payload, _ = self.queue.popleft()
            self.rollout.handle(StepPayload.model_validate(payload))
        raise AssertionError("rollout did not settle")

    def record(self, deploy_id: str) -> dict[str, Any]:
        rec = self.state.get(deploy_id)
        assert rec is not None
        return rec


@pytest.fixture
def driver(dsettings: Settings, rclient: redis.Redis) -> Driver:
    return Driver(dsettings, rclient)
