"""Schemathesis against the coordinator's /openapi.json, with auth, on a real stack: no 5xx, every
response matches the document (status codes, content types, bodies, headers), 405s carry Allow.

``positive_data_acceptance`` is left out: some schema-valid requests are refused by rules the
schema cannot express (an opaque cursor from this API, a deploy without configured services,
strict integers), and those refusals are correct 4xx answers.

``POST /api/v1/workers/stop`` is left out: with the admin token the run would stop its own worker
agent (its purpose), and every later chat turn with ``?wait`` would then wait its whole wait for
an answer no worker gives; tests/deploy/test_rollback_commands.py covers it on a real agent.
"""

from __future__ import annotations

import pytest

from shared.devtools.embedded_redis import free_port
from tests import requests_free_http as http
from tests.fuzz.runner import run_schemathesis
from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_running

pytestmark = pytest.mark.slow


def test_no_server_errors_and_responses_match_the_schema(procs, env_factory, tmp_path, rclient, token):
    port = free_port()
    procs.start("coordinator", env_factory(COORDINATOR_PORT=port), tmp_path / "coordinator.log")
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http.get(f"{base}/health/ready")[0] == 200, timeout=30, what="coordinator ready")
    run_schemathesis(
        f"{base}/openapi.json",
        tmp_path,
        [f"Authorization: Bearer {token('admin')}"],
        exclude_paths=("/api/v1/workers/stop",),
    )
