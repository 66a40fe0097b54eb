"""Log lines never carry task payloads or local variables, and a traceback has a bounded number of
lines, in development (console, where structlog would otherwise use ``rich`` with locals when it
is installed — it is in this virtualenv, through schemathesis) and in production (JSON).

Dramatiq logs "Failed to process message <actor>(<args>) with unhandled exception." with the
message's arguments: the record shows the actor and the message id instead. The text of an
exception raised while a task runs (``fail`` raises its payload's ``message``; a validation error
quotes its input) stays in the task record (error, traceback), behind the API's auth."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import orjson
import pytest

from shared.procutil import isolated_env
from tests.conftest import ROOT
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running, wait_status

SECRET = "sk-live-SECRET-4d1f9a"
LOCAL = "LOCAL-VALUE-7c2e"
MAX_LINES = 60  # per record, whatever the depth of the stack

SCRIPT = f"""
import logging, sys
import dramatiq
from dramatiq.broker import MessageProxy
from shared.logging import bind_contextvars, clear_contextvars, get_logger, setup_logging

setup_logging("INFO", json=sys.argv[1] == "json", process="test")
message = dramatiq.Message(
    queue_name="default.p2", actor_name="fail", args=({{"message": "{SECRET}"}},), kwargs={{}},
    options={{}}, message_id="m-1234",
)

def actor(payload):
    local_marker = "{LOCAL}"
    raise RuntimeError(payload["message"])

def ping(n):
    local_marker = "{LOCAL}"
    return pong(n + 1)

def pong(n):
    return ping(n + 1)

try:
    actor(message.args[0])
except Exception:
    # what dramatiq.worker logs for an unhandled exception in an actor
    logging.getLogger("dramatiq.worker.WorkerThread").error(
        "Failed to process message %s with unhandled exception.", MessageProxy(message), exc_info=True
    )
bind_contextvars(task_id="t-1", task_type="fail")
try:
    actor(message.args[0])
except Exception:
    get_logger("worker.task").exception("task raised")
clear_contextvars()
try:
    ping(0)
except RecursionError:
    get_logger("coordinator").exception("unhandled error on POST /api/v1/tasks")
sys.stderr.write("END\\n")
"""


def run(mode: str) -> str:
    env = isolated_env()
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("END\n"), done.stderr[-2000:]
    return done.stderr


def assert_clean(out: str) -> None:
    assert SECRET not in out
    assert LOCAL not in out
    assert "local_marker" not in out
    assert "locals" not in out.lower()
    assert not re.search(r"[│╭╰─]", out), "a rich traceback"


@pytest.mark.parametrize("mode", ["console", "json"])
def test_tracebacks_are_plain_bounded_and_carry_no_payload(mode):
    assert importlib.util.find_spec("rich") is not None  # the case that used to print locals
    out = run(mode)
    assert_clean(out)
    if mode == "json":
        records = [orjson.loads(line) for line in out.splitlines()[:-1]]
        assert len(records) == 3, out
        failed, raised, recursion = records
        assert "fail" in failed["event"] and "m-1234" in failed["event"], failed
        for record in records:
            assert record["exception"].startswith("Traceback (most recent call last):"), record
            assert len(record["exception"].splitlines()) <= MAX_LINES, record
        assert "RuntimeError" in failed["exception"] and "RuntimeError" in raised["exception"]
        assert "RecursionError: maximum recursion depth exceeded" in recursion["exception"]
    else:
        assert "Failed to process message fail" in out and "m-1234" in out
        assert out.count("Traceback (most recent call last):") == 3
        assert "RuntimeError" in out
        assert "RecursionError: maximum recursion depth exceeded" in out
        assert len(out.splitlines()) <= 3 * (MAX_LINES + 1) + 1


@pytest.mark.slow
async def test_failing_task_logs_no_payload_in_a_real_worker(
    procs, env_factory, tmp_path, rclient, api, auth
):
    _, log = start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    resp = await api.post(
        "/api/v1/tasks", json={"type": "fail", "payload": {"message": SECRET}}, headers=auth()
    )
    assert resp.status == 202, await resp.text()
    task_id = (await resp.json())["id"]
    fields = wait_status(rclient, task_id, "dead")
    assert SECRET in fields.get("error", ""), fields  # the record keeps what happened
    wait_for(
        lambda: read_log(log).count("Traceback (most recent call last)") >= 3,
        what="three failed attempts logged",
    )
    out = read_log(log)
    assert_clean(out)
    assert "RequestedFailure" in out
    for block in out.split("Traceback (most recent call last)")[1:]:
        lines = block.splitlines()  # the traceback, then whatever was logged after it
        end = next(i for i, line in enumerate(lines) if "RequestedFailure" in line)
        assert end + 1 <= MAX_LINES, block
