"""The worker's fast paths behave exactly like what they replace: Dramatiq's JSON decoding, its
middleware signal loop, and redis-py's pooled connection per script call."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import pytest
import redis
from dramatiq import Middleware
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from dramatiq.middleware import SkipMessage

from shared.fastscript import FastScript
from worker.broker import MessageEncoder, build_broker

DECODE_CASES = [
    b'{"queue_name":"default.p2","args":[{"n":1}],"kwargs":{},"options":{}}',
    '{"s":"caf\u00e9 \u2713","e":"\\u00e9\\n\\"q\\"","f":-1.5e300,"z":null,"l":[[],{}]}'.encode(),
    b'{"big":123456789012345678901234567890,"i":-9223372036854775808}',  # beyond 64 bits: json's int
    b'{"long":0.12345678901234567890123}',
    b'{"nan":NaN,"inf":Infinity,"ninf":-Infinity}',  # json accepts them, orjson does not
    b'{"lone":"\\ud800"}',  # a lone surrogate: json keeps it, orjson refuses
    b'{"dup":1,"dup":2}',
]


@pytest.mark.parametrize("data", DECODE_CASES)
def test_messages_decode_as_dramatiqs_encoder_decodes_them(data):
    """The same values of the same types, including where orjson alone would differ."""
    expected, got = JSONEncoder().decode(data), MessageEncoder().decode(data)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe{}"])
def test_undecodable_messages_fail_as_with_dramatiqs_encoder(data):
    """Bad JSON or bad UTF-8: Dramatiq's DecodeError, as before."""
    with pytest.raises(DecodeError):
        MessageEncoder().decode(data)


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before {self.name}")
        if self.fail:
            raise RuntimeError("boom")

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.calls.append(f"after {self.name}")


class Skipper(Middleware):
    def before_process_message(self, broker: Any, message: Any) -> None:
        raise SkipMessage("skip")


def test_signals_reach_every_overriding_middleware_in_order(settings, caplog):
    """Hooks run in the broker's order (after_* reversed); a failing hook is logged and the
    others still run; a middleware added later is called too; SkipMessage still propagates."""
    broker = build_broker(settings, worker_id="signals")
    calls: list[str] = []
    broker.add_middleware(Recorder("a", calls))
    broker.add_middleware(Recorder("b", calls, fail=True))
    broker.emit_after("process_message", None, result=None)
    assert calls == ["after b", "after a"]
    calls.clear()
    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("ack", None)  # nobody records acks: nothing to call, nothing fails
    assert calls == []
    broker.add_middleware(Recorder("c", calls))
    calls.clear()
    with caplog.at_level(logging.CRITICAL):
        broker.middleware.remove(next(m for m in broker.middleware if type(m).__name__ == "TaskLifecycle"))
        broker.emit_before("process_message", None)
    assert calls == ["before a", "before b", "before c"]
    assert "Unexpected failure in before_process_message" in caplog.text
    broker.add_middleware(Skipper())
    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", None)
    broker.close()


def test_script_calls_keep_one_connection_per_thread_and_recover_from_a_drop(redis_url):
    """Every script of a thread shares that thread's connection, no two threads share one,
    and after Redis dropped it the failed call raises and the next one reconnects."""
    client = redis.Redis.from_url(redis_url)
    echo = FastScript(client, "return ARGV[1]")
    other = FastScript(client, "return 'other'")
    used: dict[str, list[Any]] = {}

    def work(name: str) -> None:
        seen = used.setdefault(name, [])
        for n in range(20):
            assert echo(keys=[], args=[f"{name}{n}"]) == f"{name}{n}".encode()
            assert other(keys=[], args=[]) == b"other"
            if echo._local.held.conn not in seen:
                seen.append(echo._local.held.conn)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(conns) == 1 for conns in used.values()), used  # one connection per thread...
    assert len({id(conns[0]) for conns in used.values()}) == 4  # ...and not shared between them
    assert echo(keys=[], args=["main"]) == b"main"
    client.client_kill_filter(_type="normal", skipme=True)  # Redis drops every connection
    with pytest.raises(redis.ConnectionError):
        echo(keys=[], args=["x"])  # the call in flight fails (the task store retries it)
    assert echo(keys=[], args=["again"]) == b"again"  # and the next one reconnects
    client.close()


def test_a_forked_child_does_not_use_its_parents_connection(redis_url):
    """A child forked after a call opens its own connection; the parent's stays in step."""
    client = redis.Redis.from_url(redis_url)
    echo = FastScript(client, "return ARGV[1]")
    assert echo(keys=[], args=["parent"]) == b"parent"
    parent_conn = echo._local.held.conn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new connection, the parent's untouched
        try:
            ok = echo(keys=[], args=["child"]) == b"child" and echo._local.held.conn is not parent_conn
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert echo(keys=[], args=["parent again"]) == b"parent again"
    assert echo._local.held.conn is parent_conn
    client.close()
