"""The RabbitMQ test harness (tests/rabbitmq.py): private nodes that never touch the machine's
broker, quorum queues with publisher confirms, and (``make soak``) a 3-node cluster whose quorum
queue outlives its leader."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import psutil
import pytest

from tests.rabbitmq import (
    HOST,
    RESERVED_PORTS,
    RabbitCluster,
    RabbitError,
    RabbitNode,
    settle_quorum_declarations,
)

SOAK = os.environ.get("OPSDECK_SOAK") == "1"
soak = pytest.mark.skipif(not SOAK, reason="soak: runs under `make soak` (OPSDECK_SOAK=1)")


def connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.connection_attempts = 3
    params.retry_delay = 0.5
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def declare_quorum(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, **args: object
) -> None:
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum", **args})


def publish_confirmed(url: str, queue: str, body: bytes) -> None:
    """Publish one persistent message and wait for the broker's confirm (pika raises on a nack
    or an unroutable return)."""
    with connect(url) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent), mandatory=True
        )


def consume_one(url: str, queue: str, timeout: float = 10.0) -> bytes | None:
    """Consume and ack one message (None if none arrives within ``timeout`` seconds)."""
    with connect(url) as conn:
        channel = conn.channel()
        for method, _props, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            channel.cancel()
            return bytes(body)
        channel.cancel()
    return None


def beam_ports(node: RabbitNode) -> set[int]:
    """Remote ports of the node's VM's TCP connections (which epmd it talks to)."""
    ports = set()
    for pid in node.beam_pids():
        for conn in psutil.Process(pid).net_connections("tcp"):
            if conn.raddr:
                ports.add(conn.raddr.port)
    return ports


def test_node_listens_only_on_its_own_free_ports(rabbit: RabbitNode, rabbit_management_url: str) -> None:
    ports = {rabbit.amqp_port, rabbit.management_port, rabbit.dist_port, rabbit.epmd.port}
    assert len(ports) == 4 and ports.isdisjoint(RESERVED_PORTS) and 5672 not in ports
    assert rabbit.nodename.startswith("opsdeck-test-") and rabbit.nodename.endswith("@localhost")
    assert rabbit_management_url == f"http://127.0.0.1:{rabbit.management_port}"
    listeners = {(item["protocol"], item["port"]) for item in rabbit.api("GET", "/api/overview")["listeners"]}
    assert listeners == {
        ("amqp", rabbit.amqp_port),
        ("http", rabbit.management_port),
        ("clustering", rabbit.dist_port),
    }
    # what the VM really listens on (the API shows the HTTP listener as "::"): loopback, our ports only
    assert rabbit.listening() == {
        (HOST, rabbit.amqp_port),
        (HOST, rabbit.management_port),
        (HOST, rabbit.dist_port),
    }
    # registered with its own epmd, never the machine's (4369)
    assert rabbit.epmd.port in beam_ports(rabbit) and 4369 not in beam_ports(rabbit)
    assert rabbit.api("GET", "/api/whoami")["name"] == rabbit.user


def test_quorum_queue_publish_confirm_consume(rabbit: RabbitNode, rabbit_vhost: str, rabbit_url: str) -> None:
    assert rabbit_url == rabbit.amqp_url_for(rabbit_vhost) and f":{rabbit.amqp_port}/" in rabbit_url
    with connect(rabbit_url) as conn:
        declare_quorum(conn.channel(), "jobs")
    publish_confirmed(rabbit_url, "jobs", b"hello quorum")
    [row] = rabbit.list_queues(rabbit_vhost)
    assert (row["name"], row["type"], row["leader"]) == ("jobs", "quorum", rabbit.nodename)
    assert consume_one(rabbit_url, "jobs") == b"hello quorum"
    assert consume_one(rabbit_url, "jobs", timeout=0.5) is None


def test_each_test_gets_its_own_vhost(rabbit: RabbitNode, rabbit_vhost: str, rabbit_url: str) -> None:
    assert rabbit.list_queues(rabbit_vhost) == []  # nothing left by other tests
    other = rabbit.add_vhost()
    try:
        other_url = rabbit.amqp_url_for(other)
        for url in (rabbit_url, other_url):
            with connect(url) as conn:
                declare_quorum(conn.channel(), "same-name")
        publish_confirmed(rabbit_url, "same-name", b"mine")
        assert consume_one(other_url, "same-name", timeout=0.5) is None
        assert consume_one(rabbit_url, "same-name") == b"mine"
    finally:
        rabbit.delete_vhost(other)
    assert other not in {v["name"] for v in rabbit.api("GET", "/api/vhosts")}


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A node of this test's own (it gets killed), not the session's."""
    node = RabbitNode(tmp_path / "rabbit").start()
    yield node
    node.close()


@pytest.mark.slow
def test_kill_is_a_real_crash_and_restart_keeps_durable_messages(own_node: RabbitNode) -> None:
    vhost = own_node.add_vhost()
    url = own_node.amqp_url_for(vhost)
    with connect(url) as conn:
        declare_quorum(conn.channel(), "survivor")
    publish_confirmed(url, "survivor", b"confirmed before the crash")
    settle_quorum_declarations()  # else the crash loses the queue's Ra member (see RA_REGISTRY_SYNC)

    [beam] = own_node.beam_pids()
    own_node.kill()
    assert not psutil.pid_exists(beam) and not own_node.running
    assert not any(
        own_node.nodename in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )

    own_node.start()  # same ports, same data: the URL still works
    assert consume_one(url, "survivor") == b"confirmed before the crash"
    own_node.stop()
    assert not own_node.running and own_node.beam_pids() == []


@soak
@pytest.mark.soak
@pytest.mark.slow
def test_cluster_forms_with_three_distinct_nodes(rabbit_cluster: RabbitCluster) -> None:
    nodes = rabbit_cluster.nodes
    names = {n.nodename for n in nodes}
    assert len(names) == 3
    for node in nodes:
        assert rabbit_cluster.running_nodes(node) == names
    ports = [p for n in nodes for p in (n.amqp_port, n.management_port, n.dist_port)]
    assert len(set(ports)) == 9 and set(ports).isdisjoint(RESERVED_PORTS)
    assert len({n.dir for n in nodes}) == 3 and len({n.epmd.port for n in nodes}) == 1
    assert len({(n.home / ".erlang.cookie").read_text() for n in nodes}) == 1
    assert {n["name"] for n in nodes[1].api("GET", "/api/nodes") if n["running"]} == names


@soak
@pytest.mark.soak
@pytest.mark.slow
def test_quorum_queue_survives_killing_its_leader(rabbit_cluster: RabbitCluster) -> None:
    cluster = rabbit_cluster
    vhost = cluster.seed.add_vhost()
    queue, body = "orders", f"before the kill {uuid.uuid4()}".encode()
    killed: RabbitNode | None = None
    try:
        with connect(cluster.seed.amqp_url_for(vhost)) as conn:
            declare_quorum(conn.channel(), queue, **{"x-quorum-initial-group-size": 3})
        info = cluster.queue_info(queue, vhost)
        assert set(info["members"]) == set(info["online"]) == {n.nodename for n in cluster.nodes}
        settle_quorum_declarations()

        killed = cluster.leader(queue, vhost)
        publish_confirmed(killed.amqp_url_for(vhost), queue, body)  # confirmed = on a majority
        cluster.kill(killed)

        new_leader = cluster.wait_leader(queue, vhost, not_on=killed)
        assert new_leader is not killed
        other = cluster.any_running(exclude=[killed])
        assert consume_one(other.amqp_url_for(vhost), queue) == body

        cluster.restart(killed)
        assert cluster.running_nodes(killed) == {n.nodename for n in cluster.nodes}
        killed = None
    finally:
        if killed is not None:
            cluster.ensure_running()
        cluster.seed.delete_vhost(vhost)


@pytest.mark.slow
def test_a_node_that_cannot_start_says_why(tmp_path: Path) -> None:
    node = RabbitNode(tmp_path / "bad", extra_conf={"no_such_setting.really": "1"})
    try:
        with pytest.raises(RabbitError, match=r"(?s)exited.*first errors.*no_such_setting\.really"):
            node.start(timeout=60)
        assert not node.running and node.beam_pids() == []
    finally:
        node.close(graceful=False)


def test_node_urls_are_spread_by_process_and_keep_their_fail_over_order():
    from shared.transport.urls import spread

    urls = ["amqp://a/", "amqp://b/", "amqp://c/"]
    assert spread(urls, 0) == urls
    assert spread(urls, 4) == ["amqp://b/", "amqp://c/", "amqp://a/"]
    assert {spread(urls, pid)[0] for pid in range(3)} == set(urls)  # every node is someone's first
    assert sorted(spread(urls)) == sorted(urls) and spread([], 1) == []
