"""Schemathesis against the dashboard's /api/openapi.json, with auth, on a real stack (Redis, a
worker agent, the dashboard process): no 5xx, every response matches the document (status codes,
content types, bodies, headers), 405s carry Allow.

The caller is a bearer admin token (bearer callers need no CSRF token; the Origin header names the
dashboard itself, as a browser's would). Before the run the stack holds a succeeded and a dead
task, a dead letter, a second registered worker (a heartbeat no agent stands behind, so commands
to it cost nothing) and a command to it; the config file pins the path parameters of the detail
and control routes to them, so those routes answer from real data and not only 404.
``positive_data_acceptance`` is left out, as for the coordinator: schema-valid requests naming a
worker, task, command or deploy that does not exist are correctly refused with 404.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.devtools.embedded_redis import free_port
from shared.tasks import FAIL
from tests import requests_free_http as http
from tests.dashboard.conftest import KEYS, fake_heartbeat
from tests.dashboard.test_api import submit
from tests.fuzz.runner import run_schemathesis
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow

CONFIG = """
[[operations]]
include-path-regex = '^/api/worker/\\{{id\\}}'
parameters = {{ "path.id" = "idle" }}

[[operations]]
include-path-regex = '^/api/commands/'
parameters = {{ "path.id" = "{command}" }}

[[operations]]
include-path-regex = '^/api/tasks/\\{{id\\}}'
parameters = {{ "path.id" = "{task}" }}

[[operations]]
include-path-regex = '^/api/queue/\\{{name\\}}/dead/\\{{message_id\\}}'
parameters = {{ "path.name" = "default.p2", "path.message_id" = "{dead}" }}
"""


def test_no_server_errors_and_responses_match_the_schema(
    procs, env_factory, tmp_path, rclient, token, settings
):
    port = free_port()
    log = tmp_path / "dashboard.log"
    procs.start("dashboard", env_factory(DASHBOARD_PORT=port), log)
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http.get(f"{base}/health")[0] == 200, timeout=30, what="dashboard up")
    admin = token("admin")
    (task,) = asyncio.run(submit(settings))
    (dead,) = asyncio.run(submit(settings, task_type=FAIL, payload={"message": "boom"}))
    wait_status(rclient, task, "succeeded")
    wait_status(rclient, dead, "dead")
    (letter,) = wait_for(lambda: rclient.zrange(KEYS.dead_letters("default.p2"), 0, -1), what="a dead letter")
    fake_heartbeat(rclient, "idle")  # a registered worker no agent obeys: scale it to 64 at no cost
    status, reply = http.post(f"{base}/api/worker/idle/resume", {}, admin)
    assert status == 202, reply
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(command=reply["command_id"], task=task, dead=letter.decode()))
    headers = [f"Authorization: Bearer {admin}", f"Origin: {base}"]
    run_schemathesis(f"{base}/api/openapi.json", tmp_path, headers, config=config, budget=120)
    assert "unhandled error" not in read_log(log), read_log(log)[-4000:]
