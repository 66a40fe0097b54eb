"""``BROKER_URL`` read without importing a broker client: which transport, which nodes, and a
form safe to log."""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def node_urls(broker_url: str) -> list[str]:
    """The node URLs of ``BROKER_URL`` (comma- or semicolon-separated ``amqp://`` / ``amqps://``)."""
    urls = [u.strip() for u in broker_url.replace(";", ",").split(",") if u.strip()]
    for url in urls:
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL: {redact(url)!r}")
    return urls


def spread(urls: list[str], seed: int | None = None) -> list[str]:
    """``urls`` rotated to start at the node ``seed`` (the process id by default) picks: each
    process of a deployment connects to its own first node and fails over through the others in
    the order given, so connections spread over the cluster instead of all landing on the first
    URL (RabbitMQ proxies a queue's traffic to its leader from any node)."""
    if not urls:
        return urls
    start = (os.getpid() if seed is None else seed) % len(urls)
    return urls[start:] + urls[:start]


def is_rabbitmq(broker_url: str | None) -> bool:
    """True when ``BROKER_URL`` names RabbitMQ (unset or ``redis://`` is the Redis transport)."""
    first = (broker_url or "").replace(";", ",").split(",", 1)[0].strip()
    return urlsplit(first).scheme in ("amqp", "amqps")


def redact(url: str) -> str:
    """``url`` without its password (for logs and health)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
