"""The nginx traffic router (weights file + reload command) and the stable-version git tags."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from shared.deploy.config import NginxOptions
from worker.deploy.errors import ProviderError
from worker.deploy.gittag import create_tag, tag_name
from worker.deploy.routers import NginxRouter


def options(tmp_path, reload_command):
    return NginxOptions(
        config_path=tmp_path / "nginx" / "upstream.conf",
        upstream="app",
        stable_server="127.0.0.1:9001",
        canary_server="127.0.0.1:9002",
        reload_command=reload_command,
    )


@pytest.mark.parametrize("weight", [1, 5, 25, 100])
def test_nginx_router_writes_weights_and_reloads(tmp_path, weight):
    marker = tmp_path / "reloaded"
    router = NginxRouter(options(tmp_path, [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]))
    router.set_weight(weight)
    text = (tmp_path / "nginx" / "upstream.conf").read_text()
    assert "upstream app {" in text
    if weight < 100:
        assert f"server 127.0.0.1:9001 weight={100 - weight};" in text
    else:
        assert "9001" not in text  # all traffic on the new version
    assert f"server 127.0.0.1:9002 weight={weight};" in text
    assert marker.read_text() == "x"  # the reload command ran once


def test_nginx_reload_failure_fails_the_step(tmp_path):
    router = NginxRouter(options(tmp_path, [sys.executable, "-c", "import sys; sys.exit('bad config')"]))
    with pytest.raises(ProviderError, match="nginx reload exited 1"):
        router.set_weight(5)


def test_stable_tag_is_an_annotated_tag_in_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=ops@example.invalid", "-c", "user.name=ops"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(key, "ops")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, "ops@example.invalid")
    name = create_tag(repo, "api", "v1.2/3", "api v1.2/3 is stable")
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert name == f"api-stable-v1.2-3-{today}" == tag_name("api", "v1.2/3")
    kind = subprocess.run([*git, "cat-file", "-t", name], capture_output=True, text=True, check=True)
    assert kind.stdout.strip() == "tag"  # annotated, not lightweight
    assert create_tag(repo, "api", "v1.2/3", "again") == name  # idempotent
