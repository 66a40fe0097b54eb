"""The embedded Redis keeps its data to its owner: AOF files and log 0600 in 0700 directories
(task payloads are in the AOF), whatever the caller's umask and whatever an older run left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import redis

from shared.devtools.embedded_redis import EmbeddedRedis
from tests.helpers import wait_for


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_data_dir_and_files_are_private(tmp_path):
    data = tmp_path / "var" / "redis"
    # What an older version left behind: a world-readable directory and log.
    data.mkdir(parents=True, mode=0o755)
    (data / "redis.log").write_text("old\n")
    os.chmod(data / "redis.log", 0o644)
    old = os.umask(0o022)
    try:
        server = EmbeddedRedis(data)
        server.start()
    finally:
        os.umask(old)
    try:
        client = redis.Redis.from_url(server.url)
        client.set("task", "payload")
        client.bgrewriteaof()  # new AOF files written by a forked child
        wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, what="AOF rewrite")
        client.close()
        found = modes(data)
        assert any("aof" in name for name in found), found
        for name, mode in found.items():
            path = data / name
            want = 0o700 if path.is_dir() else 0o600
            assert mode == want, (name, oct(mode), found)
    finally:
        server.stop()
