"""The installed Dramatiq speaks the private Redis protocol Opsdeck's transport was written for
(shared/transport/contract.py states it: dispatch.lua's digest, the private names, the message
encoding, the key shapes); a Dramatiq that differs fails here, loudly, not in production."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from shared.keys import Keys
from shared.transport import contract

ROOT = Path(__file__).resolve().parents[2]


def test_installed_dramatiq_matches_the_contract() -> None:
    found = contract.breaches()
    assert not found, contract.report(found)


def test_a_changed_dispatch_script_is_caught_and_the_report_says_what_to_recheck() -> None:
    script = contract.dispatch_script().replace('".XQ"', '".DLQ"')
    found = contract.breaches(script=script)
    whats = [b.what for b in found]
    assert "dramatiq/brokers/redis/dispatch.lua sha256" in whats
    assert any("dead letters" in w for w in whats)  # names the key shape that moved
    message = contract.report(found)
    assert "dispatch.lua sha256" in message
    for path in ("shared/transport/redis_broker.py", "shared/transport/maintenance.py",
                 "shared/transport/redis_keys.py", "shared/lua/submit.lua"):  # fmt: skip
        assert path in message


def test_a_version_outside_the_pinned_series_is_caught() -> None:
    assert [b.what for b in contract.breaches(installed_version="2.3.0")] == ["dramatiq version"]
    assert contract.breaches(installed_version="2.2.9") == []


def test_changed_private_python_code_is_caught() -> None:
    def _dispatch(self: Any, command: str) -> None:  # a different body than Dramatiq's
        """Not Dramatiq's."""

    objects = {**contract._OBJECTS, "dramatiq.brokers.redis.RedisBroker._dispatch": _dispatch}
    found = contract.breaches(objects=objects)
    assert [b.what for b in found] == ["source of dramatiq.brokers.redis.RedisBroker._dispatch sha256"]


def test_pyproject_pins_dramatiq_to_the_contract_series() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (dramatiq,) = [
        Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "dramatiq"
    ]
    major, minor = (int(p) for p in contract.DRAMATIQ_SERIES.split("."))
    assert dramatiq.specifier == SpecifierSet(f">={major}.{minor},<{major}.{minor + 1}"), (
        f"pyproject.toml asks for dramatiq{dramatiq.specifier}; the transport is written for "
        f"{contract.DRAMATIQ_SERIES}.x (shared/transport/contract.py): change both together"
    )
    assert "redis" in dramatiq.extras


def test_opsdeck_key_names_have_the_shapes_dispatch_lua_builds() -> None:
    keys = Keys("opsdeck:", "dq")
    assert keys.queue("default") == "dq:default"
    assert keys.queue_messages("default") == "dq:default.msgs"
    assert keys.delay_queue("default") == "dq:default.DQ" == f"dq:{contract.dq_name('default')}"
    assert keys.delay_queue_messages("default") == "dq:default.DQ.msgs"
    assert keys.dead_letters("default") == "dq:default.XQ" == f"dq:{contract.xq_name('default.DQ')}"
    assert keys.dead_letter_messages("default") == "dq:default.XQ.msgs"
    assert keys.dramatiq_acks("b1", "default.DQ") == "dq:__acks__.b1.default.DQ"
    assert keys.broker_heartbeats == "dq:__heartbeats__"


def test_the_worker_broker_builds_on_the_contract_names() -> None:
    from shared.transport import redis_broker as broker

    assert broker.OpsdeckBroker.__mro__[1] is contract.RedisBroker
    assert broker._NotingConsumer.__mro__[1] is contract._RedisConsumer
