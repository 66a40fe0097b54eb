"""What Opsdeck relies on of Dramatiq's *private* Redis protocol, imported and pinned in one place.

Opsdeck writes and reads Dramatiq's Redis data itself (``shared/lua/submit.lua`` builds messages,
``finish.lua`` acks, ``shared/transport/lua/`` and ``cancel.lua`` move them,
``shared/transport/redis_keys.py`` names Dramatiq's keys, ``shared/transport/redis_broker.py``
overrides ``RedisBroker._dispatch`` and subclasses ``_RedisConsumer``,
``shared/transport/maintenance.py`` calls ``dispatch.lua`` with its eight positional arguments).
None of that is Dramatiq's public API, so ``pyproject.toml`` pins Dramatiq to the minor series
below and this module states, for that series, exactly what the code was written against: the
digest of ``dispatch.lua``, the digests of the private Python code Opsdeck re-implements or
subclasses, the dispatch arguments, the message's field order and encoding, and the key shapes.
:func:`breaches` compares all of it with the installed Dramatiq;
``tests/shared/test_transport_contract.py`` fails loudly on any difference.

When Dramatiq is upgraded: read the diff of what a breach names, re-check the transport code
listed in :data:`TRANSPORT_CODE` against it, then update the constants here (and only here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, dq_name, q_name, xq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.message import Message

__all__ = [
    "DISPATCH_ARGS",
    "DISPATCH_LUA_SHA256",
    "DRAMATIQ_SERIES",
    "MESSAGE_FIELDS",
    "SOURCE_SHA256",
    "TRANSPORT_CODE",
    "Breach",
    "RedisBroker",
    "_RedisConsumer",
    "breaches",
    "compute_backoff",
    "current_millis",
    "dispatch_script",
    "dq_name",
    "q_name",
    "xq_name",
]

#: The minor series the transport was written against (``pyproject.toml``: ``>=2.2,<2.3``).
DRAMATIQ_SERIES = "2.2"

#: SHA-256 of ``dramatiq/brokers/redis/dispatch.lua`` as shipped by Dramatiq 2.2.1.
DISPATCH_LUA_SHA256 = "ba4d872e4fb204ebc3f73ca4719265a9946d70e847856c125314f01a8c90540c"

#: ``dispatch.lua``'s ARGV before the command's own arguments (KEYS = [namespace]), in order:
#: ``OpsdeckBroker._dispatch`` and ``worker/agent.py``'s maintenance call pass exactly these.
DISPATCH_ARGS = (
    "command",
    "timestamp",
    "queue_name",
    "worker_id",
    "heartbeat_timeout",
    "dead_message_ttl",
    "do_maintenance",
    "max_unpack_size",
)

#: ``Message``'s fields in the order ``Message.encode`` writes them; ``shared/lua/submit.lua``
#: concatenates the JSON in this order, with no spaces (``JSONEncoder``'s separators).
MESSAGE_FIELDS = (
    "queue_name",
    "actor_name",
    "args",
    "kwargs",
    "options",
    "message_id",
    "message_timestamp",
)

#: How ``dispatch.lua`` (2.2) builds the key names that ``shared/keys.py`` and the Lua scripts
#: reproduce: each fragment must appear verbatim in the script (the digest pins the rest).
DISPATCH_KEY_FRAGMENTS = {
    "ack set  {ns}:__acks__.{broker_id}.{queue}": (
        'local acks = namespace .. ":__acks__." .. worker_id',
        'local queue_acks = acks .. "." .. queue_name',
    ),
    "heartbeats  {ns}:__heartbeats__": ('local heartbeats = namespace .. ":__heartbeats__"',),
    "queue list  {ns}:{queue}": ('local queue_full_name = namespace .. ":" .. queue_name',),
    "messages hash  {ns}:{queue}.msgs": ('local queue_messages = queue_full_name .. ".msgs"',),
    "dead letters  {ns}:{queue without .DQ}.XQ (+ .msgs)": (
        'local xqueue_full_name = namespace .. ":" .. queue_canonical_name .. ".XQ"',
        'local xqueue_messages = xqueue_full_name .. ".msgs"',
    ),
    "enqueue args  message_id, data": (
        'if command == "enqueue" then\n    local message_id = ARGS[1]\n    local message_data = ARGS[2]',
    ),
    "ack args  message_id": ('elseif command == "ack" then\n    local message_id = ARGS[1]',),
}

#: SHA-256 of the source of the private Python code Opsdeck re-implements or subclasses.
SOURCE_SHA256 = {
    # OpsdeckBroker._dispatch copies its argument list (and calls _should_do_maintenance and
    # _max_unpack_size); worker/agent.py's maintenance call builds the same list by hand.
    "dramatiq.brokers.redis.RedisBroker._dispatch": (
        "ee77793d07f17bbefbffb5da1da34b5bcce1d5d7eb78eb793a6863eb397fd3d5"
    ),
    # OpsdeckBroker.do_enqueue relies on enqueue() calling do_enqueue(queue_name,
    # options["redis_message_id"], message.encode()), delayed messages going to dq_name(queue).
    "dramatiq.brokers.redis.RedisBroker.enqueue": (
        "e1590deaae2f786a112a39bbea6003e910489c7e69f3bc227fca16a2d898e9ee"
    ),
    # _NotingConsumer relies on __next__ reading message_cache / outstanding_message_count /
    # prefetch, calling broker.do_fetch, and compute_backoff(self.misses, max_backoff=self.timeout)
    # reading self.timeout on every empty fetch; and on ack() calling broker.do_ack.
    "dramatiq.brokers.redis._RedisConsumer": (
        "6385e191ba400ad449a10b533b49eec9a9a354f329f9e79877084df9604a8407"
    ),
}

#: What to re-check when a breach is reported: every place that knows Dramatiq's wire format.
TRANSPORT_CODE = (
    "shared/transport/redis_broker.py (OpsdeckBroker._dispatch, do_enqueue, do_ack, _NotingConsumer)",
    "shared/transport/maintenance.py (dispatch.lua's positional arguments)",
    "shared/transport/redis_keys.py (__acks__, __heartbeats__, .msgs, .DQ, .XQ key names)",
    "shared/transport/queues.py and shared/transport/lua/ (dead letters, purge)",
    "shared/lua/submit.lua (the message JSON and the enqueue), finish.lua (the ack), cancel.lua",
)

_OBJECTS: dict[str, Any] = {
    "dramatiq.brokers.redis.RedisBroker._dispatch": RedisBroker._dispatch,
    "dramatiq.brokers.redis.RedisBroker.enqueue": RedisBroker.enqueue,
    "dramatiq.brokers.redis._RedisConsumer": _RedisConsumer,
}


@dataclasses.dataclass(frozen=True)
class Breach:
    """One difference between the installed Dramatiq and what Opsdeck was written for."""

    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, found {self.found}"


def dispatch_script() -> str:
    """The installed ``dramatiq/brokers/redis/dispatch.lua``."""
    return (files("dramatiq.brokers") / "redis" / "dispatch.lua").read_text()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_version(found: str) -> list[Breach]:
    if found.split(".")[:2] == DRAMATIQ_SERIES.split("."):
        return []
    return [Breach("dramatiq version", f"{DRAMATIQ_SERIES}.x", found)]


def _check_dispatch(script: str) -> list[Breach]:
    out = []
    digest = _sha256(script)
    if digest != DISPATCH_LUA_SHA256:
        out.append(Breach("dramatiq/brokers/redis/dispatch.lua sha256", DISPATCH_LUA_SHA256, digest))
    declared = f"args=[{', '.join(DISPATCH_ARGS)}, ...]"
    if declared not in script:
        out.append(Breach("dispatch.lua argument list", declared, "a different header (read the script)"))
    for shape, fragments in DISPATCH_KEY_FRAGMENTS.items():
        out += [
            Breach(f"dispatch.lua key/argument shape {shape}", repr(f), "missing")
            for f in fragments
            if f not in script
        ]
    return out


def _check_sources(objects: dict[str, Any]) -> list[Breach]:
    out = []
    for name, expected in SOURCE_SHA256.items():
        found = _sha256(inspect.getsource(objects[name]))
        if found != expected:
            out.append(Breach(f"source of {name} sha256", expected, found))
    return out


def _parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


_BROKER_KEYWORDS = ["namespace", "maintenance_chance", "heartbeat_timeout", "dead_message_ttl", "client"]
_CONSUMER_ATTRIBUTES = ["message_cache", "misses", "queued_message_ids", "timeout"]


def _is_property(cls: type, name: str) -> bool:
    return isinstance(inspect.getattr_static(cls, name, None), property)


def _keyword_only(fn: Callable[..., Any], name: str) -> bool:
    parameter = inspect.signature(fn).parameters.get(name)
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY


def _check_names() -> list[Breach]:
    """The private attributes and signatures used by name (a rename fails here, not at run time)."""
    consumer = _RedisConsumer(None, "q", 1, 5000)  # type: ignore[no-untyped-call]
    init = _parameters(RedisBroker.__init__)
    checks: list[tuple[str, object, object]] = [
        ("RedisBroker.__init__ keywords", _BROKER_KEYWORDS, [k for k in _BROKER_KEYWORDS if k in init]),
        ("RedisBroker._should_do_maintenance(command)", ["self", "command"],
         _parameters(RedisBroker._should_do_maintenance)),
        ("RedisBroker._max_unpack_size()", ["self"], _parameters(RedisBroker._max_unpack_size)),
        ("RedisBroker.consumer_class is a property", True, _is_property(RedisBroker, "consumer_class")),
        ("_RedisConsumer(broker, queue_name, prefetch, timeout)",
         ["self", "broker", "queue_name", "prefetch", "timeout"], _parameters(_RedisConsumer.__init__)),
        ("_RedisConsumer.outstanding_message_count is a property", True,
         _is_property(_RedisConsumer, "outstanding_message_count")),
        ("_RedisConsumer instance attributes", _CONSUMER_ATTRIBUTES,
         [a for a in _CONSUMER_ATTRIBUTES if hasattr(consumer, a)]),
        ("compute_backoff(attempts, *, max_backoff=...)", ["attempts", True],
         [_parameters(compute_backoff)[0], _keyword_only(compute_backoff, "max_backoff")]),
        ("dq_name('q'), xq_name('q'), xq_name('q.DQ'), q_name('q.DQ')", ("q.DQ", "q.XQ", "q.XQ", "q"),
         (dq_name("q"), xq_name("q"), xq_name("q.DQ"), q_name("q.DQ"))),
        ("Message fields (Message.encode order)", list(MESSAGE_FIELDS),
         [f.name for f in dataclasses.fields(Message)]),
    ]  # fmt: skip
    return [
        Breach(what, repr(expected), repr(found)) for what, expected, found in checks if found != expected
    ]


def _check_encoding() -> list[Breach]:
    """``Message.encode`` with Dramatiq's JSON encoder gives exactly what submit.lua concatenates."""
    message: Message[Any] = Message(
        queue_name="default",
        actor_name="echo",
        args=({"n": 1},),
        kwargs={},
        options={"redis_message_id": "t1", "correlation_id": "c", "priority": "normal"},
        message_id="t1",
        message_timestamp=1700000000000,
    )
    expected = (
        b'{"queue_name":"default","actor_name":"echo","args":[{"n":1}],"kwargs":{},'
        b'"options":{"redis_message_id":"t1","correlation_id":"c","priority":"normal"},'
        b'"message_id":"t1","message_timestamp":1700000000000}'
    )
    found = JSONEncoder().encode(message.asdict())
    if found != expected:
        return [Breach("Message.encode bytes (what submit.lua writes)", expected.decode(), found.decode())]
    return []


def breaches(
    *,
    installed_version: str | None = None,
    script: str | None = None,
    objects: dict[str, Any] | None = None,
) -> list[Breach]:
    """Every difference between the installed Dramatiq and this contract (empty: it holds).

    The keyword arguments replace what is read from the installed package (for tests)."""
    return [
        *_check_version(installed_version if installed_version is not None else version("dramatiq")),
        *_check_dispatch(script if script is not None else dispatch_script()),
        *_check_sources(objects if objects is not None else _OBJECTS),
        *_check_names(),
        *_check_encoding(),
    ]


def report(found: list[Breach]) -> str:
    """A failure message: what changed, and what to re-check."""
    lines = [
        f"The installed Dramatiq {dramatiq.__version__} differs from the {DRAMATIQ_SERIES}.x protocol "
        "Opsdeck's transport was written for:",
        *(f"  - {b}" for b in found),
        "Read Dramatiq's diff for these, re-check the transport code against it:",
        *(f"  - {path}" for path in TRANSPORT_CODE),
        "then update the constants in shared/transport/contract.py (and the pin in pyproject.toml).",
    ]
    return "\n".join(lines)
