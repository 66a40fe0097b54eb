"""A private RabbitMQ for tests: real ``rabbitmq-server`` nodes on free 127.0.0.1 ports.

Never the machine's own broker (127.0.0.1:5672, epmd 4369, distribution 25672): every node gets
free ports for AMQP, the management API and the Erlang distribution, talks to its own ``epmd``
(``ERL_EPMD_PORT``; a cluster shares one), keeps its data, logs and config under its own
directory and has its own Erlang cookie (``HOME`` pointed at a directory holding
``.erlang.cookie``, mode 0400, for the node and for the CLI tools alike). Nothing under
/etc/rabbitmq is read: ``RABBITMQ_CONF_ENV_FILE``, ``RABBITMQ_CONFIG_FILE`` and
``RABBITMQ_ADVANCED_CONFIG_FILE`` point into the node's directory.

The scripts run are the package's real ones (``/usr/lib/rabbitmq/bin``), not the Debian wrapper
in /usr/sbin, which switches to the ``rabbitmq`` user and /var/lib/rabbitmq. ``rabbitmq-server``
is a shell that runs the Erlang VM (``beam.smp``) as its child and forwards SIGTERM to it; it is
started in its own process group, and :meth:`RabbitNode.kill` SIGKILLs the VM itself (then the
group), so a "crash" really is one and leaves no VM behind.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest

from shared.procutil import isolated_env, spawn

#: What the Debian package installs; the fixtures install ``rabbitmq-server`` when it is missing.
SERVER_WRAPPER = Path("/usr/sbin/rabbitmq-server")
#: The package's real scripts (symlinks into /usr/lib/rabbitmq/lib/rabbitmq_server-<version>/sbin).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: Ports of the machine's own RabbitMQ and its CLI tools: never handed to a test node.
RESERVED_PORTS = frozenset({4369, 5671, 5672, 15672, 25672, *range(35672, 35683)})
HOST = "127.0.0.1"
USER, PASSWORD = "opsdeck", "opsdeck-test"

#: First boot of a node (schema, feature flags, plugins) measured at 5-8 s here; generous bound.
#: A graceful stop (and ``stop_app``) takes 5 s more than it needs on RabbitMQ 3.10: the
#: management agent waits that long for its stats to stop (rabbitmq/rabbitmq-server#11070, fixed
#: in 3.13), so fixtures tear down with :meth:`RabbitNode.kill` (the data is thrown away anyway).
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
CTL_TIMEOUT = 60.0

#: Ra 2.2 (RabbitMQ 3.10) writes its registry of quorum-queue members (``names.dets``) to disk
#: every 500 ms, not on each change: a node SIGKILLed within that window after a quorum queue was
#: declared comes back without that queue's member and starts a blank one (its messages are then
#: unreachable there; fixed upstream in rabbitmq/ra#443, see rabbitmq/rabbitmq-server#15725). A test
#: that crashes a node waits this long after declaring (:func:`settle_quorum_declarations`).
RA_REGISTRY_SYNC = 1.0

_names = itertools.count(1)


def settle_quorum_declarations() -> None:
    """Wait until quorum queues declared so far would survive a SIGKILL (:data:`RA_REGISTRY_SYNC`)."""
    time.sleep(RA_REGISTRY_SYNC)


class RabbitError(RuntimeError):
    """A node did not start, stop or answer as asked; the message carries its log tail."""


def require_rabbitmq() -> None:
    """Make sure ``rabbitmq-server`` is installed, else install Debian's package (root + apt-get),
    else skip. The package's postinst may start the system service where no init policy forbids
    it: what the install started (processes of the ``rabbitmq`` user) is ended, by pid."""
    if SERVER_WRAPPER.exists() and (RABBITMQ_BIN / "rabbitmq-server").exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "rabbitmq-server is not installed and cannot be installed here (needs root and apt-get): "
            "install Debian's 'rabbitmq-server' package"
        )
    before = _service_pids()
    done = _apt_install("rabbitmq-server")
    for pid in _service_pids() - before:
        _end(pid)
    if done.returncode != 0 or not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail(
            f"apt-get install rabbitmq-server failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )


def _service_pids() -> set[int]:
    """Erlang processes of the ``rabbitmq`` user (the system service; test nodes run as us)."""
    pids = set()
    for proc in psutil.process_iter(["name", "username"]):
        if proc.info["username"] == "rabbitmq" and proc.info["name"] in {"beam.smp", "epmd"}:
            pids.add(proc.pid)
    return pids


def _apt_install(package: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:  # stale or missing package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    return done


def _end(pid: int) -> None:
    """TERM one process the install started, KILL it if it lingers."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1, free right now, none of :data:`RESERVED_PORTS`."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in RESERVED_PORTS:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return f"({path} missing)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _first_errors(path: Path, lines: int = 10) -> str:
    if not path.exists():
        return ""
    found = [line for line in path.read_text(errors="replace").splitlines() if "[error]" in line]
    return "\n".join(found[:lines])


def make_cookie_home(home: Path) -> Path:
    """``home`` with a fresh random ``.erlang.cookie`` (mode 0400): HOME for nodes and CLI tools."""
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
    return home


class Epmd:
    """A private epmd on a free 127.0.0.1 port, run in the foreground as our child (erl would
    otherwise start a daemon that outlives the test)."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_ports(1)[0]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        binary = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = spawn(
                [binary, "-port", str(self.port), "-address", HOST],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RabbitError(f"epmd did not listen on {HOST}:{self.port}:\n{_tail(self.log, 20)}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None


class RabbitNode:
    """One ``rabbitmq-server`` node with the management plugin, its data under ``base_dir``.

    ``epmd`` and ``home`` are shared by the nodes of a cluster; a lone node makes (and owns) its
    own. Ports stay the same across :meth:`restart`, so URLs handed out stay valid.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        name: str | None = None,
        epmd: Epmd | None = None,
        home: Path | None = None,
        extra_conf: Mapping[str, str] | None = None,
    ) -> None:
        self.dir = base_dir.resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name or f"opsdeck-test-{os.getpid()}-{next(_names)}"
        self.nodename = f"{self.name}@localhost"
        self.amqp_port, self.management_port, self.dist_port = free_ports(3)
        self._own_epmd = epmd is None
        self.epmd = epmd or Epmd(self.dir / "epmd.log")
        self.home = make_cookie_home(home or self.dir / "home")
        self.extra_conf = dict(extra_conf or {})
        self.user, self.password = USER, PASSWORD
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RabbitNode({self.nodename}, amqp={self.amqp_port}, running={self.running})"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def amqp_url(self) -> str:
        """AMQP URL of the default vhost ``/``."""
        return self.amqp_url_for("/")

    def amqp_url_for(self, vhost: str) -> str:
        return f"amqp://{self.user}:{self.password}@{HOST}:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API (basic auth: :attr:`user` / :attr:`password`)."""
        return f"http://{HOST}:{self.management_port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / f"{self.nodename}.log"

    # -- files and environment ---------------------------------------------------------------

    def _write_config(self) -> None:
        conf = {
            "listeners.tcp.default": f"{HOST}:{self.amqp_port}",
            "management.tcp.ip": HOST,
            "management.tcp.port": str(self.management_port),
            "default_user": self.user,
            "default_pass": self.password,
            "default_user_tags.administrator": "true",
            "loopback_users": "none",  # bound to 127.0.0.1 only anyway
            "log.file.level": "info",
            "log.console": "false",
            "disk_free_limit.absolute": "50MB",
            **self.extra_conf,
        }
        (self.dir / "rabbitmq.conf").write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.dir / "rabbitmq-env.conf").write_text("# this node's settings come from the environment\n")

    def env(self) -> dict[str, str]:
        """Environment for this node's server and its CLI tools (same cookie, same epmd)."""
        env = {k: v for k, v in isolated_env().items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self.home),
            LC_ALL="C.UTF-8",
            ERL_EPMD_PORT=str(self.epmd.port),
            ERL_EPMD_ADDRESS=HOST,
            ERL_CRASH_DUMP=str(self.dir / "erl_crash.dump"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),  # absent: none read
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback_dist,
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
            # CLI tools listen for distribution too: an ephemeral port, not 35672-35682
            RABBITMQ_CTL_DIST_PORT_MIN="0",
            RABBITMQ_CTL_DIST_PORT_MAX="0",
        )
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server without waiting for it (data kept from an earlier run)."""
        if self.running:
            raise RabbitError(f"{self.nodename} is already running")
        self.epmd.start()
        self._write_config()
        with (self.dir / "stdout.log").open("ab") as out:
            self.proc = spawn(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def start(self, timeout: float = START_TIMEOUT) -> RabbitNode:
        """Start the node and wait until it is ready (see :meth:`wait_ready`)."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until AMQP accepts connections and the management API answers, then confirm with
        ``rabbitmqctl await_startup`` (which proves the CLI reaches the node: cookie and epmd).
        On failure the node is killed and :class:`RabbitError` carries its log tail."""
        deadline = time.monotonic() + timeout
        while not (_port_open(self.amqp_port) and self._management_up()):
            if not self.running:
                self._fail(f"{self.nodename} exited with {self.proc.returncode if self.proc else None}")
            if time.monotonic() > deadline:
                self._fail(f"{self.nodename} not ready within {timeout:.0f}s")
            time.sleep(0.1)
        left = max(5.0, deadline - time.monotonic())
        try:
            self.ctl("await_startup", "--timeout", str(int(left)), timeout=left + 10)
        except (RabbitError, subprocess.TimeoutExpired) as exc:
            self._fail(f"{self.nodename}: await_startup failed: {exc}")

    def _management_up(self) -> bool:
        try:
            self.api("GET", "/api/overview", timeout=1.0)
            return True
        except (OSError, RabbitError):
            return False

    def _fail(self, what: str) -> None:
        self.kill()
        raise RabbitError(f"{what}\n{self.describe_logs()}")

    def describe_logs(self, lines: int = 40) -> str:
        """The first errors (the cause, before the crash reports that follow it) and the tails of
        the node's log and of its stdout (early failures, e.g. a bad config, only show there)."""
        stdout = self.dir / "stdout.log"
        return (
            f"--- first errors\n{_first_errors(self.log_file) or _first_errors(stdout) or '(none)'}\n"
            f"--- {self.log_file} (last {lines} lines)\n{_tail(self.log_file, lines)}\n"
            f"--- {stdout} (last 20 lines)\n{_tail(stdout, 20)}"
        )

    def beam_pids(self) -> list[int]:
        """Pids of the Erlang VM(s) under the ``rabbitmq-server`` shell."""
        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.name().startswith("beam"):
                    pids.append(child.pid)
        return pids

    def listening(self) -> set[tuple[str, int]]:
        """(ip, port) of every TCP socket the Erlang VM listens on."""
        found = set()
        for pid in self.beam_pids():
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        return found

    def kill(self) -> None:
        """SIGKILL the Erlang VM (a crash: nothing flushed, no goodbye to the cluster), then the
        rest of the process group; the shell reaps the VM, we reap the shell. Quorum queues
        declared less than :data:`RA_REGISTRY_SYNC` before are lost on this node."""
        proc = self.proc
        if proc is None:
            return
        for pid in self.beam_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # the shell's `wait` returns once the VM is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.proc = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful stop (SIGTERM: the shell has the VM shut down cleanly), :meth:`kill` after
        ``timeout`` seconds."""
        self.signal_stop()
        self.wait_stopped(timeout)

    def signal_stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self.kill()  # the VM is gone by now unless it hung; either way nothing is left

    def restart(self, *, graceful: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Stop (or kill) and start again on the same ports and data."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self.start(timeout)

    def close(self, *, graceful: bool = True) -> None:
        """Stop (or kill) the node and, if it owns it, its epmd."""
        if graceful:
            self.stop()
        else:
            self.kill()
        if self._own_epmd:
            self.epmd.stop()

    # -- CLI and management API --------------------------------------------------------------

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = CTL_TIMEOUT) -> str:
        """Run a CLI tool (``rabbitmqctl``, ``rabbitmq-queues``, ...) against this node; its stdout.
        :class:`RabbitError` with the output when it fails."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / tool), "-n", self.nodename, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )
        if done.returncode != 0:
            raise RabbitError(
                f"{tool} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the management API; the decoded JSON reply (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.management_url + path, data=data, method=method)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            raise RabbitError(f"{method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from None
        return json.loads(raw) if raw.strip() else None

    def add_vhost(self, name: str | None = None) -> str:
        """Create a vhost (a fresh random name by default) with full permissions for our user."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        quoted = quote(name, safe="")
        self.api("PUT", f"/api/vhosts/{quoted}", {})
        self.api(
            "PUT",
            f"/api/permissions/{quoted}/{quote(self.user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return name

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost and everything in it (missing: nothing to do)."""
        try:
            self.api("DELETE", f"/api/vhosts/{quote(name, safe='')}")
        except RabbitError as exc:
            if "HTTP 404" not in str(exc):
                raise

    def list_queues(self, vhost: str = "/", *items: str) -> list[dict[str, Any]]:
        """``rabbitmqctl list_queues`` as dicts (default items: name, type, leader, members, online)."""
        items = items or ("name", "type", "leader", "members", "online")
        out = self.ctl("list_queues", "-p", vhost, *items, "--formatter", "json", "--quiet")
        rows: list[dict[str, Any]] = json.loads(out or "[]")
        return rows


class RabbitCluster:
    """``size`` nodes sharing one epmd and one cookie, each with its own name, ports and data,
    joined to the first with ``stop_app; join_cluster; start_app``."""

    def __init__(self, base_dir: Path, size: int = 3, extra_conf: Mapping[str, str] | None = None) -> None:
        self.dir = base_dir.resolve()
        self.epmd = Epmd(self.dir / "epmd.log")
        home = make_cookie_home(self.dir / "home")
        run = f"opsdeck-test-{os.getpid()}-{next(_names)}"
        self.nodes = [
            RabbitNode(
                self.dir / f"node{i}", name=f"{run}-{i}", epmd=self.epmd, home=home, extra_conf=extra_conf
            )
            for i in range(1, size + 1)
        ]

    def __repr__(self) -> str:
        return f"RabbitCluster({self.nodes})"

    @property
    def seed(self) -> RabbitNode:
        return self.nodes[0]

    def start(self, timeout: float = START_TIMEOUT) -> RabbitCluster:
        """Boot every node at once, join the others to the first (``stop_app`` in parallel: 5 s
        each on 3.10; ``join_cluster`` one at a time; ``start_app`` in parallel), wait until every
        node sees all of them running."""
        self.epmd.start()
        joiners = self.nodes[1:]
        try:
            for node in self.nodes:
                node.launch()
            _each(self.nodes, lambda n: n.wait_ready(timeout))
            _each(joiners, lambda n: n.ctl("stop_app"))
            for node in joiners:
                node.ctl("join_cluster", self.seed.nodename)
            _each(joiners, lambda n: self._start_app(n, timeout))
            self.wait_formed(timeout)
        except BaseException:
            self.stop(graceful=False)
            raise
        return self

    @staticmethod
    def _start_app(node: RabbitNode, timeout: float) -> None:
        node.ctl("start_app")
        node.wait_ready(timeout)

    def join(self, node: RabbitNode, to: RabbitNode) -> None:
        """Join one running node to ``to``'s cluster."""
        node.ctl("stop_app")
        node.ctl("join_cluster", to.nodename)
        node.ctl("start_app")
        node.wait_ready()

    def running_nodes(self, via: RabbitNode | None = None) -> set[str]:
        """Names of the cluster's running nodes as ``via`` (default: a running node) sees them."""
        via = via or self.any_running()
        status = json.loads(via.ctl("cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def wait_formed(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node sees exactly the running nodes as running members
        (asked through the management API: a CLI call costs ~1 s)."""
        want = {n.nodename for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        while True:
            seen: dict[str, Any] = {}
            for node in self.nodes:
                if node.running:
                    try:
                        seen[node.nodename] = {
                            m["name"] for m in node.api("GET", "/api/nodes") if m["running"]
                        }
                    except (OSError, RabbitError) as exc:
                        seen[node.nodename] = repr(exc)
            if all(s == want for s in seen.values()):
                return
            if time.monotonic() > deadline:
                raise RabbitError(f"cluster not formed within {timeout:.0f}s: want {want}, seen {seen}")
            time.sleep(0.5)

    def any_running(self, exclude: Iterable[RabbitNode] = ()) -> RabbitNode:
        skip = {id(n) for n in exclude}
        for node in self.nodes:
            if node.running and id(node) not in skip:
                return node
        raise RabbitError("no running node in the cluster")

    def node(self, nodename: str) -> RabbitNode:
        for node in self.nodes:
            if node.nodename == nodename:
                return node
        raise KeyError(nodename)

    def queue_info(self, queue: str, vhost: str = "/", via: RabbitNode | None = None) -> dict[str, Any]:
        """``list_queues`` row of one queue: name, type, leader, members, online."""
        for row in (via or self.any_running()).list_queues(vhost):
            if row["name"] == queue:
                return row
        raise KeyError(f"queue {queue!r} not in vhost {vhost!r}")

    def leader(self, queue: str, vhost: str = "/", via: RabbitNode | None = None) -> RabbitNode:
        """The node that leads quorum queue ``queue``."""
        return self.node(self.queue_info(queue, vhost, via)["leader"])

    def wait_leader(
        self, queue: str, vhost: str = "/", *, not_on: RabbitNode | None = None, timeout: float = 60.0
    ) -> RabbitNode:
        """Wait until ``queue`` has a leader on a running node (other than ``not_on``)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            with contextlib.suppress(RabbitError, KeyError, subprocess.TimeoutExpired):
                via = self.any_running(exclude=[not_on] if not_on else [])
                last = self.queue_info(queue, vhost, via)
                node = self.node(last["leader"])
                if node.running and node is not not_on:
                    return node
            if time.monotonic() > deadline:
                raise RabbitError(f"no new leader for {queue!r} within {timeout:.0f}s (last: {last})")
            time.sleep(0.5)

    def kill(self, node: RabbitNode) -> None:
        node.kill()

    def restart(self, node: RabbitNode, timeout: float = START_TIMEOUT) -> None:
        """Start a stopped or killed member again (it rejoins from its data) and wait for the
        cluster to see it."""
        if node.running:
            node.stop()
        node.start(timeout)
        self.wait_formed(timeout)

    def ensure_running(self) -> None:
        """Start again any member a test left down."""
        down = [n for n in self.nodes if not n.running]
        for node in down:
            node.start()
        if down:
            self.wait_formed()

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every node (in parallel: SIGTERM all, then wait) or kill them, then the epmd."""
        for node in self.nodes:
            if graceful:
                node.signal_stop()
            else:
                node.kill()
        for node in self.nodes:
            node.wait_stopped()
        self.epmd.stop()


def _each(nodes: list[RabbitNode], action: Callable[[RabbitNode], object]) -> None:
    """Run ``action`` on every node at once (threads); the first error is raised."""
    if nodes:
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            list(pool.map(action, nodes))
