"""The allow-list is one explicit list: the same in every process, whatever it imported, and
the worker declares an actor for each of its types."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.procutil import isolated_env
from shared.task_types import INTERNAL_TASK_TYPES, REGISTRY, TASK_TYPES, all_queues, task_types
from shared.tasks import ECHO, EchoPayload, Priority, TaskRegistry, TaskType
from tests.conftest import ROOT

EXPECTED = ["coach", "deploy", "echo", "fail", "feedback", "sleep"]
QUEUES = [f"{g}.p{p}" for p in range(4) for g in ("default", "coach", "deploy")]

PROBE = """
import json, sys
first = __import__(sys.argv[1], fromlist=["_"])
from shared import task_types as tasks
before = (sorted(tasks.task_types()), tasks.all_queues())
if sys.argv[2]:
    from shared.settings import Settings
    Settings(opsdeck_services=sys.argv[2])
after = (sorted(tasks.task_types()), tasks.all_queues())
print(json.dumps({"before": before, "after": after}))
"""


def probe(module: str, services: str = "") -> dict[str, list[list[str]]]:
    env = isolated_env()
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, services], env=env, check=True, timeout=60,
        capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, list[list[str]]] = json.loads(out.stdout)
    return result


def test_the_allow_list_is_the_explicit_list():
    assert sorted(t.name for t in TASK_TYPES) == EXPECTED
    assert sorted(task_types()) == EXPECTED
    assert all_queues() == QUEUES
    assert [t.name for t in INTERNAL_TASK_TYPES] == ["deploy_step", "deploy_restore", "deploy_notify"]
    assert all(REGISTRY.get(t.name) is None for t in INTERNAL_TASK_TYPES)  # internal: not submittable


@pytest.mark.parametrize(
    "module", ["shared.tasks", "shared.settings", "shared.submission", "worker.agent", "worker.metrics"]
)
def test_validating_settings_registers_nothing(module, tmp_path):
    services = tmp_path / "services.yaml"
    services.write_text(
        "services:\n  web:\n    provider: webhook\n    webhook: {url: 'http://x', secret_env: S}\n"
    )
    seen = probe(module, str(services))
    assert seen["before"] == seen["after"] == [EXPECTED, QUEUES]


def test_the_agent_lists_the_deploy_queues():
    from worker import agent

    queues = vars(agent)["all_queues"]()  # what maintenance, depths and the heartbeat read
    assert {f"deploy.p{p}" for p in range(4)} <= set(queues)
    assert set(vars(agent)["task_types"]()) == set(EXPECTED)  # the indexes it trims


def test_the_worker_declares_an_actor_for_every_listed_type(settings):
    from worker.actors import register_actors
    from worker.broker import build_broker

    broker = build_broker(settings, worker_id="declare")
    try:
        register_actors(broker, settings)
        declared = set(broker.get_declared_actors())
    finally:
        broker.close()
    listed = {t.actor_name for t in (*TASK_TYPES, *INTERNAL_TASK_TYPES)}
    assert declared == listed


def test_a_registry_refuses_bad_names_and_redefinitions():
    registry = TaskRegistry([ECHO])
    assert registry.register(ECHO) is ECHO  # idempotent
    with pytest.raises(ValueError, match="already registered differently"):
        registry.register(TaskType("echo", EchoPayload, "another"))
    with pytest.raises(ValueError, match="must match"):
        TaskRegistry([TaskType("Bad", EchoPayload, "x")])
    assert registry.all_queues() == [f"default.{p.value.lower()}" for p in Priority]
