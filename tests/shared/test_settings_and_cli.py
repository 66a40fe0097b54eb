"""Settings from the environment, production refusals, and the ``opsdeck token`` command."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest

from shared.auth import Verifier
from shared.errors import ConfigError
from shared.keys import Keys
from shared.settings import Settings, load_settings
from tests.conftest import ROOT, SECRET

LONG = "s" * 40


def run(args, env, cwd=None):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=cwd)


def clean_env(tmp_path, **extra):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OPSDECK_VAR_DIR": str(tmp_path / "var")}
    env.update(extra)
    return env


def test_defaults(monkeypatch):
    for name in ("PORT", "COORDINATOR_PORT", "REDIS_URL", "OPSDECK_ENV", "JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.coordinator_host, s.coordinator_bind_port) == ("127.0.0.1", 8000)
    assert (s.dashboard_host, s.dashboard_port) == ("127.0.0.1", 8001)
    assert s.worker_poll_interval == 5.0
    assert s.shutdown_timeout == 25.0
    assert s.opsdeck_env == "development"


def test_keys_come_from_the_settings(monkeypatch):
    monkeypatch.delenv("KEY_PREFIX", raising=False)
    monkeypatch.delenv("DRAMATIQ_NAMESPACE", raising=False)
    s = Settings()
    assert s.keys == Keys() and s.keys is Settings().keys  # one Keys per process
    other = Settings(key_prefix="other:", dramatiq_namespace="dq")
    assert other.keys == Keys("other:", "dq") and other.keys is not s.keys
    copied = s.model_copy(update={"key_prefix": "copy:"})
    assert copied.keys.prefix == "copy:"  # a copy with another prefix does not keep the old names


def test_port_wins_over_coordinator_port(monkeypatch):
    monkeypatch.setenv("COORDINATOR_PORT", "9000")
    monkeypatch.setenv("PORT", "10000")
    assert Settings().coordinator_bind_port == 10000


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://user:pw@example.invalid:6380/1"])
def test_redis_and_rediss_urls_are_accepted(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    assert Settings().effective_redis_url == url


def test_bad_values_are_one_clear_line(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "http://nope")
    with pytest.raises(ConfigError, match=r"^REDIS_URL: "):
        load_settings()
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("WORKER_THREADS", "0")
    with pytest.raises(ConfigError, match=r"^WORKER_THREADS: "):
        load_settings()


def test_short_secret_is_refused(monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_settings()


@pytest.mark.parametrize("module", ["coordinator", "worker", "dashboard"])
def test_production_refuses_to_start_without_jwt_secret(tmp_path, module):
    env = clean_env(tmp_path, OPSDECK_ENV="production", REDIS_URL="redis://127.0.0.1:1/0")
    result = run([sys.executable, "-m", module], env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "JWT_SECRET is required in production" in lines[0]


def test_production_requires_redis_url(tmp_path):
    env = clean_env(tmp_path, OPSDECK_ENV="production", JWT_SECRET=LONG)
    result = run([sys.executable, "-m", "coordinator"], env)
    assert result.returncode != 0
    assert "REDIS_URL is required in production" in result.stderr


def test_token_prints_one_jwt_for_the_servers_secret(tmp_path):
    env = clean_env(tmp_path, JWT_SECRET=SECRET)
    result = run(
        [sys.executable, "-m", "shared.devtools.cli", "token", "--scope", "tasks:write",
         "--scope", "tasks:read", "--ttl", "120", "--sub", "ci"], env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    principal = Verifier(SECRET.encode()).verify(lines[0])
    assert principal.subject == "ci"
    assert principal.scopes == {"tasks:write", "tasks:read"}
    claims = jwt.decode(lines[0], SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120


def test_token_in_development_uses_the_generated_secret(tmp_path):
    env = clean_env(tmp_path)
    first = run([sys.executable, "-m", "shared.devtools.cli", "token", "--scope", "admin"], env)
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "var" / "jwt_secret").read_bytes().strip()
    assert len(secret) >= 32
    assert oct((tmp_path / "var" / "jwt_secret").stat().st_mode & 0o777) == "0o600"
    assert Verifier(secret).verify(first.stdout.strip()).has("tasks:write")
    second = run([sys.executable, "-m", "shared.devtools.cli", "token", "--scope", "admin"], env)
    assert Verifier(secret).verify(second.stdout.strip())


def test_token_rejects_unknown_scope(tmp_path):
    result = run(
        [sys.executable, "-m", "shared.devtools.cli", "token", "--scope", "root"], clean_env(tmp_path)
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid choice: 'root'" in result.stderr


def test_token_in_production_without_secret_fails_clearly(tmp_path):
    env = clean_env(tmp_path, OPSDECK_ENV="production", REDIS_URL="redis://127.0.0.1:1/0")
    result = run([sys.executable, "-m", "shared.devtools.cli", "token", "--scope", "admin"], env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "JWT_SECRET is required in production" in result.stderr
