"""The services file: the issue's example loads as is; bad files stop the process with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.deploy.config import DEFAULT_STEPS, load_services
from shared.errors import ConfigError
from shared.settings import Settings

EXAMPLE = """
services:
  api:
    provider: webhook
    webhook: {url: "http://127.0.0.1:9000/hook", secret_env: DEPLOY_WEBHOOK_SECRET}
    strategy: canary
    canary: {steps: [1, 5, 25, 100], pause_seconds: 60}
    gates: {smoke_urls: ["http://127.0.0.1:9000/health"], timeout_seconds: 5}
  site:
    provider: render
    render: {service_id: srv-xxxx, api_key_env: RENDER_API_KEY}
    strategy: direct
"""


def test_the_issue_example_loads_as_is(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(EXAMPLE)
    services = load_services(path).services
    assert services["api"].steps() == [1, 5, 25, 100]
    assert services["api"].canary.pause_seconds == 60
    assert services["site"].steps() == [100]
    assert services["site"].render is not None and services["site"].render.service_id == "srv-xxxx"
    assert list(DEFAULT_STEPS) == [1, 5, 25, 100]


def test_json_services_file(tmp_path):
    path = tmp_path / "services.json"
    path.write_text(
        '{"services": {"x": {"provider": "webhook", "webhook": {"url": "https://h", "secret_env": "S"}}}}'
    )
    assert load_services(path).services["x"].strategy == "direct"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "services:\n  api:\n    provider: webhook\n",
            "service 'api': (service): provider webhook needs a 'webhook' section",
        ),
        (
            EXAMPLE.replace("[1, 5, 25, 100]", "[1, 50, 25]"),
            "service 'api': canary.steps: steps must increase",
        ),
        (
            EXAMPLE.replace("[1, 5, 25, 100]", "[1, 5]"),
            "service 'api': canary.steps: the last step must be 100",
        ),
        (
            EXAMPLE.replace("secret_env", "secret"),
            "service 'api': webhook.secret_env: Field required",
        ),
        (
            EXAMPLE.replace("provider: render", "provider: heroku"),
            "service 'site': provider: Input should be",
        ),
        (
            EXAMPLE.replace('"http://127.0.0.1:9000/hook"', '"file:///etc/passwd"'),
            "service 'api': webhook.url: must be",
        ),
        ("services: [\n", "not valid YAML"),
        ("- 1\n", "must be a mapping"),
    ],
)
def test_bad_files_name_the_service_and_field(tmp_path, text, expected):
    path = tmp_path / "services.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_services(path)
    assert str(info.value).startswith(f"OPSDECK_SERVICES={path}: ")
    assert expected in str(info.value)


def test_settings_refuse_a_bad_file_and_a_missing_one(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Settings(opsdeck_services=tmp_path / "missing.yaml")
    assert Settings(opsdeck_services="").opsdeck_services is None  # type: ignore[arg-type]


def test_coordinator_exits_at_start_with_a_clear_error(tmp_path, env_factory):
    path = tmp_path / "services.yaml"
    path.write_text(EXAMPLE.replace("[1, 5, 25, 100]", "[1, 5]"))
    done = subprocess.run(
        [sys.executable, "-m", "coordinator"], env=env_factory(OPSDECK_SERVICES=path, COORDINATOR_PORT=1),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"coordinator: OPSDECK_SERVICES={path}: "
        "service 'api': canary.steps: the last step must be 100 (got [1, 5])"
    )
