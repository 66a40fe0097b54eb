"""Every Prometheus query of the Grafana dashboard returns data from a running stack.

A real coordinator, worker agent and dashboard (subprocesses on free ports, the session's Redis with
a maxmemory), a fake OpenAI-compatible LLM and the deploy test's fake webhook provider get traffic:
tasks (failing ones too), chat turns answered by the LLM (one of its answers is not JSON), ratings
and two deploys. Debian's ``prometheus`` (the package that brings promtool) scrapes them every second
with ``METRICS_TOKEN`` as its bearer, through ``ops/prometheus/prometheus.yml`` with the targets and
intervals changed, and evaluates ``alerts.yml`` (every rule must evaluate without an error); Debian's
``prometheus-node-exporter`` (filesystem collector only) stands for the ``node`` job of the disk
panel. Then every panel target, annotation and variable of ``ops/grafana/opsdeck.json`` is asked
through ``/api/v1/query`` and must answer at least one finite sample: a panel reads series that
exist in a healthy stack, not only in the failure it is about.

The exceptions (:func:`exception`) say why a query may stay empty: the outbox panel with the Redis
broker (the test runs on both brokers), the disk panel where node_exporter cannot run; an excused
query must then indeed draw nothing. The Traces row is Tempo's (TraceQL), checked in test_grafana.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.devtools.embedded_redis import free_port
from tests.conftest import BROKERS
from tests.deploy.conftest import services_yaml
from tests.deploy.fakes import WEBHOOK_SECRET, FakeServer
from tests.helpers import read_log, wait_for
from tests.ops.conftest import debian_tool
from tests.ops.test_grafana import DASHBOARD, expressions
from tests.ops.test_prometheus import PROM
from tests.worker.test_end_to_end import wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # an apt-get install may come first

METRICS_TOKEN = "scrape-" + "t" * 32
#: Grafana's interval variables as it sets them for this test's minute of data, a 1 s scrape
#: interval and a 2 s step (``$__rate_interval``: max(4 x scrape interval, step + scrape interval),
#: rounded up here), and the step of the range queries (every panel target is one, like Grafana's).
INTERVALS = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "5m"}
STEP = "2s"
#: The filesystems the disk panel and the DiskSpaceLow alerts leave out (pseudo and container ones).
DISK_FSTYPES_LEFT_OUT = r"tmpfs|devtmpfs|ramfs|overlay|squashfs|nsfs"
DISK_MOUNTS_LEFT_OUT = r"/run.*|/boot.*"


def exception(title: str, broker_url: str | None, node: str | None, prom: Prometheus) -> str | None:
    """Why the panel ``title`` may draw nothing on this stack, or None: it must draw data.

    - the outbox exists only with RabbitMQ as the broker (``opsdeck_outbox_entries``);
    - the disk panel reads node_exporter, which the test runs when Debian's package is there (or can
      be installed: root and apt-get); on a host whose filesystems are all of the kinds the panel
      leaves out (a container's overlay root), node_exporter has no series the panel keeps.
    """
    if title == "Outbox entries (RabbitMQ)" and broker_url is None:
        return "opsdeck_outbox_entries exists with RabbitMQ as the broker only (the outbox)"
    if title == "Disk free":
        if node is None:
            return "prometheus-node-exporter is not installed and cannot be here (needs root and apt-get)"
        filesystems = prom.get("/api/v1/series", **{"match[]": "node_filesystem_avail_bytes"})
        assert filesystems, "node_exporter runs but Prometheus has no node_filesystem_avail_bytes"
        kept = [
            f
            for f in filesystems
            if not re.fullmatch(DISK_FSTYPES_LEFT_OUT, f["fstype"])
            and not re.fullmatch(DISK_MOUNTS_LEFT_OUT, f["mountpoint"])
        ]
        if not kept:
            return f"every filesystem of this host is of a kind the panel leaves out: {filesystems}"
    return None


#: The queries answered within this many seconds of the traffic's end (each one is retried until then).
QUERY_DEADLINE = 45.0


def to_promql(expr: str) -> str:
    """A dashboard expression as Prometheus gets it from Grafana here (multi-value variables: all)."""
    for variable, value in INTERVALS.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{[^}]*\}|\$\w+", ".*", expr)


# --- the stand-ins: an LLM and the processes Prometheus needs ------------------------------------


class FakeLLM:
    """An OpenAI-compatible ``/v1/chat/completions``: a JSON suggestion, except the second answer,
    which is prose (outcome ``invalid``; the client retries and gets JSON)."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with llm.lock:
                    llm.calls += 1
                    call = llm.calls
                content = (
                    "Sure! Here is a suggestion."
                    if call == 2
                    else json.dumps({"suggestion": "Ask which outcome matters most to them this quarter."})
                )
                body = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def started(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def node_exporter() -> str | None:
    """Debian's prometheus-node-exporter (installed when missing and possible), else None."""
    try:
        return debian_tool("prometheus-node-exporter", "prometheus-node-exporter")
    except pytest.skip.Exception:
        return None


def prometheus_config(tmp_path: Path, targets: dict[str, str], node: str | None, prom_port: int) -> Path:
    """ops/prometheus/prometheus.yml with this stack's targets, 1 s intervals, no Alertmanager."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config.pop("alerting")
    (tmp_path / "metrics_token").write_text(METRICS_TOKEN)
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in targets:
            job["static_configs"][0]["targets"] = [targets[name]]
        elif name == "node":
            if node is None:
                continue
            job["static_configs"][0]["targets"] = [node]
        elif name == "prometheus":
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = tmp_path / "prometheus.yml"  # relative paths (alerts.yml, metrics_token) resolve here
    path.write_text(yaml.safe_dump(config))
    return path


# --- HTTP ------------------------------------------------------------------------------------------


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)
    return False


@dataclass
class Prometheus:
    url: str
    since: float = 0.0  #: the start of the range queries (Unix time)

    def get(self, path: str, **params: str) -> Any:
        status, body = call("GET", f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        assert status == 200, f"{path} {params}: {status} {body}"
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def finite(self, expr: str) -> list[dict[str, Any]]:
        """The samples of ``expr`` now with a finite value (a NaN ratio of nothing is no data)."""
        return [s for s in self.query(expr) if math.isfinite(float(s["value"][1]))]

    def finite_points(self, expr: str) -> int:
        """Finite points of ``expr`` as a panel draws it: a range query from :attr:`since` to now."""
        data = self.get(
            "/api/v1/query_range", query=expr, start=f"{self.since:.3f}", end=f"{time.time():.3f}", step=STEP
        )
        assert data["resultType"] == "matrix", data
        return sum(math.isfinite(float(v)) for series in data["result"] for _, v in series["values"])

    def total(self, expr: str) -> float:
        return sum(float(s["value"][1]) for s in self.finite(expr))


# --- the test --------------------------------------------------------------------------------------


@pytest.fixture
def prometheus_binary() -> str:
    debian_tool("promtool", "prometheus")  # the package brings both
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not on PATH (Debian's 'prometheus' package)")
    return binary


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def provider() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def maxmemory(rclient: Any) -> Iterator[int]:
    """A maxmemory on the session's Redis (the memory panels divide by it), restored after."""
    before = rclient.config_get("maxmemory")["maxmemory"]
    limit = 1024 * 2**20
    rclient.config_set("maxmemory", limit)
    yield limit
    rclient.config_set("maxmemory", before)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
def test_every_dashboard_query_returns_data_from_a_running_stack(
    procs, env_factory, tmp_path, rclient, auth, broker_url, prometheus_binary, llm, provider, maxmemory
):
    services = tmp_path / "services.yaml"
    services.write_text(services_yaml(provider.fakes.url))
    ports = {name: free_port() for name in ("coordinator", "dashboard", "worker", "prometheus", "node")}
    env = env_factory(
        METRICS_TOKEN=METRICS_TOKEN,
        COORDINATOR_PORT=ports["coordinator"],
        DASHBOARD_PORT=ports["dashboard"],
        WORKER_ID="agent",
        WORKER_METRICS_PORT=ports["worker"],
        WORKER_PROCESSES=1,
        WORKER_THREADS=4,
        LLM_BASE_URL=llm.url,
        LLM_MODEL_FAST="fake-fast",
        LLM_MODEL_BALANCED="fake-balanced",
        OPSDECK_SERVICES=services,
        DEPLOY_WEBHOOK_SECRET=WEBHOOK_SECRET,
        DEPLOY_POLL_INTERVAL="0.1",
    )
    for name in ("coordinator", "worker", "dashboard"):
        procs.start(name, env, tmp_path / f"{name}.log")
    targets = {
        f"opsdeck-{name}": f"127.0.0.1:{ports[name]}" for name in ("coordinator", "dashboard", "worker")
    }
    exporter = node_exporter()
    node = f"127.0.0.1:{ports['node']}" if exporter else None
    config = prometheus_config(tmp_path, targets, node, ports["prometheus"])
    with contextlib.ExitStack() as stack:
        if exporter:
            stack.enter_context(
                started(
                    [
                        exporter,
                        f"--web.listen-address={node}",
                        "--collector.disable-defaults",
                        "--collector.filesystem",
                    ],
                    tmp_path / "node_exporter.log",
                )
            )
        prom_url = f"http://127.0.0.1:{ports['prometheus']}"
        server = stack.enter_context(
            started(
                [
                    prometheus_binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        prom = Prometheus(prom_url, since=time.time())
        base = f"http://127.0.0.1:{ports['coordinator']}"
        wait_running(rclient, "agent")
        wait_for(lambda: ready(f"{base}/health/ready"), timeout=30, what="the coordinator")
        wait_for(
            lambda: server.poll() is not None or ready(f"{prom_url}/-/ready"), timeout=30, what="prometheus"
        )
        assert server.poll() is None, read_log(tmp_path / "prometheus.log")

        def all_up() -> bool:
            active = prom.get("/api/v1/targets", state="active")["activeTargets"]
            return len(active) == len(config_jobs(config)) and all(t["health"] == "up" for t in active)

        wait_for(all_up, timeout=30, interval=0.5, what=f"every target up: {tmp_path / 'prometheus.log'}")

        generate_traffic(base, auth, prom)
        check_every_query(prom, broker_url, node)
        check_variables(prom)
        check_rules(prom)


def config_jobs(config: Path) -> list[str]:
    return re.findall(r"job_name: (\S+)", config.read_text())


#: Traffic rounds, each scraped before the next: a counter's rate needs two samples that differ, and
#: a counter created by the first increment shows no rate until it increases again.
ROUNDS = 3
TURNS = 4  # chat turns per round, three of them rated
MESSAGES = ["How much does it cost?", "We already use a competitor. Why switch?", "Send me a proposal."]


def scraped(prom: Prometheus, expr: str, at_least: float, what: str) -> None:
    wait_for(lambda: prom.total(expr) >= at_least, timeout=30, interval=0.3, what=f"{what} scraped ({expr})")


def generate_traffic(base: str, auth: Callable[..., dict[str, str]], prom: Prometheus) -> None:
    """Tasks (echo, sleep, fail: retried, then dead), chat turns (the same few messages: the LLM
    cache answers some) and ratings, in rounds; then two deploys of one service."""
    headers = auth()
    task_ids = []
    for round_ in range(1, ROUNDS + 1):
        bodies = [
            {"type": "echo", "payload": {"round": round_}},
            {"type": "sleep", "payload": {"seconds": 0.05}},
            {"type": "echo", "payload": {}},
            {"type": "fail", "payload": {"message": "x"}},
        ]
        for body in bodies:
            status, accepted = call("POST", f"{base}/api/v1/tasks", body, headers)
            assert status == 202, accepted
            task_ids.append(accepted["id"])
        for i in range(TURNS):
            body = {
                "session_id": f"grafana-{i}",
                "message": MESSAGES[(round_ + i) % len(MESSAGES)],
                "user_id": "s",
            }
            status, turn = call("POST", f"{base}/api/v1/chat?wait=10", body, headers)
            assert status == 200, turn
            if i < TURNS - 1:
                rating = {
                    "session_id": turn["session_id"],
                    "turn_number": turn["turn_number"],
                    "rating": 1 + i,
                }
                status, reply = call("POST", f"{base}/api/v1/feedback/submit", rating, headers)
                assert status == 202, reply
        scraped(prom, "sum(coordinator_suggestions_total)", round_ * TURNS, f"round {round_}'s turns")
        scraped(
            prom, "sum(coordinator_user_feedback_total)", round_ * (TURNS - 1), f"round {round_}'s ratings"
        )
        scraped(
            prom, 'sum(opsdeck_tasks_processed_total{type="echo"})', round_ * 2, f"round {round_}'s tasks"
        )
    # two deploys of one service: the annotation shows a change of opsdeck_deploys_total, which
    # needs a scrape of the first end before the second
    deploy = auth("deploy")
    for n, version in enumerate(("1.0.0", "1.0.1"), start=1):
        status, accepted = call(
            "POST", f"{base}/api/v1/deploys", {"service": "test", "version": version}, deploy
        )
        assert status == 202, accepted
        task_ids.append(accepted["id"])
        scraped(prom, "sum(opsdeck_deploys_total)", n, f"deploy {version}'s end")

    def ended() -> bool:
        for task_id in task_ids:
            status, record = call("GET", f"{base}/api/v1/tasks/{task_id}", headers=headers)
            if status != 200 or record["status"] not in ("succeeded", "dead", "failed"):
                return False
        return True

    wait_for(ended, timeout=40, interval=0.2, what="every task ended")
    # three attempts of each failing task (TASK_MAX_RETRIES=2)
    scraped(prom, 'sum(opsdeck_tasks_failed_total{type="fail"})', 3 * ROUNDS, "the failed attempts")


def check_every_query(prom: Prometheus, broker_url: str | None, node: str | None) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    pending = {where: to_promql(expr) for where, expr in expressions(dashboard)}
    excused = {}
    for where in list(pending):
        title = re.search(r"'(.*)' target", where)
        reason = exception(title.group(1), broker_url, node, prom) if title else None
        if reason:
            excused[where] = (pending.pop(where), reason)
    deadline = time.monotonic() + QUERY_DEADLINE
    while True:
        for where, expr in list(pending.items()):
            if prom.finite_points(expr):
                del pending[where]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not pending, "queries without data:\n" + "\n".join(f"{w}: {e}" for w, e in pending.items())
    for where, (expr, reason) in excused.items():  # the exception holds: no series, not a broken query
        assert prom.finite_points(expr) == 0, f"{where} has data although excused ({reason})"


def check_variables(prom: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
        values = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert values, f"variable {variable['name']}: no {label} of {metric}"


def check_rules(prom: Prometheus) -> None:
    """Every alert rule evaluates on this stack's series without an error."""

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules: list[dict[str, Any]] = wait_for(evaluated, timeout=10, interval=0.5, what="every rule evaluated")
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
