"""Benchmark: what OpenTelemetry tracing costs the coordinator's ``POST /api/v1/tasks`` and the worker.

In one run, on a private ``redis-server``, with the load generator and the round structure of
:mod:`scripts.bench.coordinator` (wrk when on PATH; short rounds, the phases alternating in
order and reversed order; each server warmed up once, before round 1):

* ``bare``: the bare aiohttp JSON handler (the framework's ceiling, the same as coordinator.py's);
* ``tracing_off``: the real coordinator app with no OTLP endpoint set (tracing off: the edge and
  the submit path run the code they ran before tracing existed);
* ``sampled_1pct``: tracing on, ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
  ``OTEL_TRACES_SAMPLER_ARG=0.01``, exporting to the receiver;
* ``sampled_100pct``: tracing on, ``parentbased_always_on``: every request's SERVER span (the
  edge's, :func:`shared.tracing.serve`) and its submit CLIENT span exported to the receiver;
* ``instrumentation_100pct``: the same at 100 %, but the SERVER span made by
  ``opentelemetry-instrumentation-aiohttp-server``'s middleware (appended to the coordinator
  app's middlewares before start-up; the routes are built with the edge span off) instead of
  the edge: the alternative issue 17 asked to measure.

Tracing is configured only as production configures it: by the standard ``OTEL_*`` variables of
each server process (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_TRACES_SAMPLER``/``_ARG``, a
per-phase ``OTEL_SERVICE_NAME`` so the receiver can count each phase's spans, and the batch span
processor's defaults unless ``OTEL_BSP_*`` are set in this script's environment), read by
:func:`shared.tracing.configure`. Any other ``OTEL_*`` variable of this script's environment is
dropped, so ``tracing_off`` is off. The receiver is ``tests/otlp_receiver.OTLPReceiver`` (OTLP/HTTP
protobuf, decoded with ``opentelemetry-proto``) in a process of its own, so its CPU is not the
coordinator's (it is reported beside it); it counts the spans of each service rather than
keeping them, and the report checks that every phase's spans arrived (``spans_per_request``).

Per phase: median req/s (and best round), p50, p99, server CPU µs per answered request (the
coordinator's process, its span-exporting thread included), the ratio of req/s to the bare
handler's and to ``tracing_off``'s paired by round (median over rounds, as coordinator.py), the
same ratios of CPU µs per request (``cpu_ratio_*``: capacity per core, steadier than req/s while
other work takes this machine's cores), and ``cost_per_request_us``: the median over rounds of
the phase's server CPU µs per request minus ``tracing_off``'s in the same round (the plan's
"< 1 ms" is checked on the 100 % edge span's).

Then the worker, as :mod:`scripts.bench.worker` measures Opsdeck's: fresh worker processes
(``build_broker``, WORKER_THREADS threads) draining N no-op tasks submitted through the task
store, with tracing off and on (``parentbased_always_on``, a CONSUMER span per task exported to
the same receiver; the tasks are submitted untraced, so each span is a sampled root), alternating
the order per round; the overhead is ``1 - on / off`` of each kind's best round, and of the
paired rounds' median.

Targets (issue 17): ``tracing_off`` ≥ 0.9× bare; 1 % sampling within 5 % of off (req/s ratio
≥ 0.95); the 100 % cost per request reported and < 1 ms. One JSON document to stdout, progress
to stderr::

    .venv/bin/python scripts/bench/tracing.py            # 12 rounds of 3 s per phase; worker 20000 x 3
    .venv/bin/python scripts/bench/tracing.py --quick    # smoke run: 2 rounds of 2 s; worker 3000 x 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import redis  # noqa: E402
from aiohttp import web  # noqa: E402

from scripts.bench import coordinator as coord  # noqa: E402
from shared.devtools.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.procutil import spawn, terminate  # noqa: E402

BARE, OFF, SAMPLED_1, SAMPLED_100, INSTRUMENTED = (
    "bare",
    "tracing_off",
    "sampled_1pct",
    "sampled_100pct",
    "instrumentation_100pct",
)
PHASES = (BARE, OFF, SAMPLED_1, SAMPLED_100, INSTRUMENTED)
#: What each phase is, for the report.
DESCRIPTIONS = {
    BARE: "bare aiohttp JSON handler",
    OFF: "coordinator, tracing off (no OTLP endpoint)",
    SAMPLED_1: "coordinator, edge SERVER span, parentbased_traceidratio 0.01",
    SAMPLED_100: "coordinator, edge SERVER span, parentbased_always_on",
    INSTRUMENTED: "coordinator, opentelemetry-instrumentation-aiohttp-server middleware, always_on",
}
#: Phase -> (sampler, its argument) of the traced phases.
SAMPLERS = {
    SAMPLED_1: ("parentbased_traceidratio", "0.01"),
    SAMPLED_100: ("parentbased_always_on", "1"),
    INSTRUMENTED: ("parentbased_always_on", "1"),
}
WORKER_SERVICE = "bench-worker-traced"
TARGETS = {"off_vs_bare_min": 0.9, "sampled_1pct_vs_off_min": 0.95, "cost_per_request_us_max": 1000}


def log(message: str) -> None:
    """A progress line on stderr (stdout is reserved for the JSON result)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- child processes: the servers (``--serve PHASE``) and the receiver (``--serve receiver``) --------


def instrumentation_middleware() -> Any:
    """``opentelemetry-instrumentation-aiohttp-server``'s middleware, set up as its instrumentor
    sets it up (tracer, meters, excluded URLs) but without its replacement of ``web.Application``:
    the middleware is appended to the coordinator's app by hand."""
    from opentelemetry.instrumentation.aiohttp_server import (
        AioHttpServerInstrumentor,
        create_aiohttp_middleware,
    )

    instrumentor = AioHttpServerInstrumentor()
    instrumentor.instrument()
    instrumentor.uninstrument()  # web.Application as it was
    return create_aiohttp_middleware()


def serve(kind: str, port: int, redis_url: str, var_dir: Path) -> None:
    """Serve phase ``kind`` on 127.0.0.1:``port`` until SIGTERM; tracing from the ``OTEL_*`` variables."""
    if kind == BARE:
        app = coord.bare_app()
    else:
        from coordinator.app import create_app
        from shared import tracing

        settings = coord.coordinator_settings(redis_url, var_dir)
        if kind == INSTRUMENTED:
            app = create_app(settings)  # routes built with tracing off: no edge span
            on = tracing.configure(settings, "opsdeck-coordinator")  # on for the submit path (start-up)
            app.middlewares.append(instrumentation_middleware())
        else:  # as `python -m coordinator` does: tracing set up before the app is built
            on = tracing.configure(settings, "opsdeck-coordinator")
            app = create_app(settings)
        if on != (kind != OFF):
            sys.exit(f"{kind}: tracing {'on' if on else 'off'}, not as the phase needs")
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, shutdown_timeout=2)


def serve_receiver(status: Path) -> None:
    """Run an :class:`OTLPReceiver` until SIGTERM, counting (not keeping) the spans of each service
    and writing ``{"endpoint", "requests", "spans": {service: n}}`` to ``status`` every 0.25 s."""
    from tests.otlp_receiver import OTLPReceiver

    class CountingReceiver(OTLPReceiver):
        """Decodes every export as the test receiver does; keeps per-service span counts only."""

        def __init__(self) -> None:
            super().__init__()
            self.counts: dict[str, int] = {}

        def _take(self, request: Any) -> None:
            with self._lock:
                self.requests += 1
                for resource_spans in request.resource_spans:
                    service = next(
                        (kv.value.string_value for kv in resource_spans.resource.attributes
                         if kv.key == "service.name"),
                        "",
                    )  # fmt: skip
                    n = sum(len(scope.spans) for scope in resource_spans.scope_spans)
                    self.counts[service] = self.counts.get(service, 0) + n

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver = CountingReceiver()
    with receiver:

        def write() -> None:
            with receiver._lock:
                doc = {"endpoint": receiver.endpoint, "requests": receiver.requests, "spans": receiver.counts}
                text = json.dumps(doc)
            status.with_suffix(".tmp").write_text(text)
            status.with_suffix(".tmp").replace(status)

        write()
        while not stop.wait(0.25):
            write()
        write()


class Receiver:
    """The receiver's process, its endpoint, and its counts read from its status file."""

    def __init__(self, tmp: Path) -> None:
        self.status = tmp / "receiver.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "receiver",
                "--status", str(self.status)]  # fmt: skip
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, cwd=str(ROOT))
        deadline = time.monotonic() + 30
        while not self.status.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                terminate(self.proc, 5)
                raise RuntimeError("the OTLP receiver did not start")
            time.sleep(0.05)
        self.endpoint: str = self.read()["endpoint"]
        log(f"OTLP/HTTP receiver pid {self.proc.pid} on {self.endpoint}")

    def read(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.status.read_text())
        return doc

    def spans(self, service: str, settle: float = 1.0) -> int:
        """Spans received from ``service`` once the count has not moved for ``settle`` seconds."""
        last, since = -1, time.monotonic()
        while True:
            now = int(self.read()["spans"].get(service, 0))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= settle:
                return now
            time.sleep(0.1)

    def stop(self) -> None:
        terminate(self.proc, 10)


def trace_env(endpoint: str, service: str, sampler: str, arg: str) -> dict[str, str]:
    """The ``OTEL_*`` variables of a traced process (``OTEL_BSP_*``: this script's, if any)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": sampler,
        "OTEL_TRACES_SAMPLER_ARG": arg,
        "OTEL_SERVICE_NAME": service,
    }


# -- the coordinator's phases ------------------------------------------------------------------------


def start_servers(redis_url: str, var_dir: Path, secret: str, endpoint: str) -> dict[str, coord.Server]:
    """One server process per phase (this script's ``--serve``), each warmed up in round 1."""
    servers: dict[str, coord.Server] = {}
    for kind in PHASES:
        extra = trace_env(endpoint, f"bench-{kind}", *SAMPLERS[kind]) if kind in SAMPLERS else {}
        servers[kind] = coord.start_server(
            kind, redis_url, var_dir, secret, None, script=Path(__file__).resolve(), extra_env=extra
        )
    return servers


async def coordinator_rounds(
    args: argparse.Namespace, redis_url: str, redis_pid: int, receiver: Receiver, tmp: Path
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The alternating rounds of every phase, and the spans each traced phase exported in all."""
    from shared.auth import mint

    secret = secrets.token_urlsafe(48)
    token = mint(secret.encode(), ["tasks:write"], subject="bench", ttl=3600)
    client = redis.Redis.from_url(redis_url)
    rounds: list[dict[str, Any]] = []
    servers: dict[str, coord.Server] = {}
    try:
        servers = start_servers(redis_url, tmp / "var", secret, receiver.endpoint)
        for number in range(1, args.rounds + 1):
            warmup = args.warmup if number == 1 else 0.0
            for kind in PHASES if number % 2 else PHASES[::-1]:
                watch: dict[str, Callable[[], list[int]]] = {
                    "server": coord.fixed([servers[kind].proc.pid]),
                    "redis": coord.fixed([redis_pid]),
                    "receiver": coord.fixed([receiver.proc.pid]),
                    "generator": coord.fixed([os.getpid()]),  # the python generator; wrk's is found
                }
                rounds.append(
                    await coord.measure_round(
                        number, kind, servers[kind], None if kind == BARE else token, args, None, watch,
                        warmup, client, enqueuing=kind != BARE,
                    )
                )  # fmt: skip
    finally:
        for server in servers.values():
            terminate(server.proc, 10)  # a traced server exports what it holds as it exits
        client.close()
    spans = {kind: receiver.spans(f"bench-{kind}") for kind in SAMPLERS}
    return rounds, spans


# -- the worker ------------------------------------------------------------------------------------


def worker_rounds(args: argparse.Namespace, redis_url: str, receiver: Receiver) -> dict[str, Any]:
    """scripts/bench/worker.py's Opsdeck throughput round with tracing off and on, alternating."""
    from scripts.bench import worker as wbench

    env = trace_env(receiver.endpoint, WORKER_SERVICE, "parentbased_always_on", "1")
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.worker_rounds + 1):
        kinds = ("off", "on") if number % 2 else ("on", "off")
        for kind in kinds:
            rate, first_ack = wbench.throughput_round(
                "opsdeck", redis_url, args.messages, args.threads, env if kind == "on" else None
            )
            log(f"worker round {number} tracing {kind}: {rate:.0f} msg/s (first ack after {first_ack:.2f} s)")
            rounds.append(
                {"round": number, "kind": f"tracing_{kind}", "msgs_per_s": round(rate, 1),
                 "first_ack_s": round(first_ack, 2)}
            )  # fmt: skip
    best = {k: max(r["msgs_per_s"] for r in rounds if r["kind"] == k) for k in ("tracing_off", "tracing_on")}
    by_round: dict[int, dict[str, float]] = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r["kind"]] = r["msgs_per_s"]
    paired = [1 - p["tracing_on"] / p["tracing_off"] for p in by_round.values()]
    spans = receiver.spans(WORKER_SERVICE)
    tasks_on = args.messages * sum(1 for r in rounds if r["kind"] == "tracing_on")
    return {
        "messages": args.messages,
        "threads": args.threads,
        "tracing_off_msgs_per_s": best["tracing_off"],
        "tracing_on_msgs_per_s": best["tracing_on"],
        "overhead": round(1 - best["tracing_on"] / best["tracing_off"], 3),
        "overhead_paired_median": round(statistics.median(paired), 3),
        "spans_received": spans,
        "spans_per_task": round(spans / tasks_on, 3) if tasks_on else 0.0,
        "rounds": rounds,
    }


# -- the report ------------------------------------------------------------------------------------


def _paired(
    rounds: list[dict[str, Any]], kind: str, base: str, key: str, pair: Callable[[float, float], float]
) -> float:
    by_round: dict[int, dict[str, float]] = {}
    for r in rounds:
        if r.get(key):
            by_round.setdefault(r["round"], {})[r["phase"]] = r[key]
    values = [pair(p[kind], p[base]) for p in by_round.values() if kind in p and base in p]
    return statistics.median(values) if values else float("nan")


def paired_difference(rounds: list[dict[str, Any]], kind: str, base: str, key: str) -> float:
    """Median over rounds of ``kind``'s ``key`` minus ``base``'s in the same round."""
    return round(_paired(rounds, kind, base, key, lambda a, b: a - b), 1)


def cpu_ratio(rounds: list[dict[str, Any]], kind: str, base: str) -> float:
    """Median over rounds of ``base``'s server CPU µs per request divided by ``kind``'s: the
    capacity ratio per core, steadier than req/s when other work takes this machine's cores."""
    return round(_paired(rounds, kind, base, "server_cpu_us_per_req", lambda a, b: b / a), 3)


def phase_report(rounds: list[dict[str, Any]], kind: str, spans: dict[str, int]) -> dict[str, Any]:
    """One phase over the rounds: coordinator.py's summary, CPU per request, ratios, spans."""
    mine = [r for r in rounds if r["phase"] == kind]
    doc: dict[str, Any] = {"phase": kind, "what": DESCRIPTIONS[kind], **coord.phase_summary(rounds, kind)}
    doc["server_cpu_us_per_req"] = round(statistics.median(r.get("server_cpu_us_per_req", 0) for r in mine))
    doc["receiver_cpu_pct"] = round(statistics.median(r["receiver_cpu_pct"] for r in mine), 1)
    doc["ratio_vs_bare"] = 1.0 if kind == BARE else coord.paired_ratio(rounds, kind)
    if kind != BARE:
        doc["cpu_ratio_vs_bare"] = cpu_ratio(rounds, kind, BARE)
    if kind not in (BARE, OFF):
        doc["ratio_vs_off"] = coord.paired_ratio(rounds, kind, OFF)
        doc["cpu_ratio_vs_off"] = cpu_ratio(rounds, kind, OFF)
        doc["cost_per_request_us"] = paired_difference(rounds, kind, OFF, "server_cpu_us_per_req")
        doc["p50_added_ms"] = paired_difference(rounds, kind, OFF, "p50_ms")
    if kind in spans:
        answered = sum(r.get("responses_2xx", 0) for r in mine)
        doc["spans_received"] = spans[kind]
        doc["spans_per_request"] = round(spans[kind] / answered, 3) if answered else 0.0
    return doc


def report(
    args: argparse.Namespace, rounds: list[dict[str, Any]], spans: dict[str, int], worker: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: per-phase figures, the costs, the target checks, the worker, every round."""
    phases = {kind: phase_report(rounds, kind, spans) for kind in PHASES}
    checks = {
        "off_vs_bare": {
            "value": phases[OFF]["ratio_vs_bare"],
            "cpu_ratio": phases[OFF]["cpu_ratio_vs_bare"],
            "min": TARGETS["off_vs_bare_min"],
        },
        "sampled_1pct_vs_off": {
            "value": phases[SAMPLED_1]["ratio_vs_off"],
            "cpu_ratio": phases[SAMPLED_1]["cpu_ratio_vs_off"],
            "min": TARGETS["sampled_1pct_vs_off_min"],
        },
        "cost_per_request_us_100pct": {
            "value": phases[SAMPLED_100]["cost_per_request_us"],
            "max": TARGETS["cost_per_request_us_max"],
        },
    }
    for check in checks.values():
        check["met"] = check["value"] >= check["min"] if "min" in check else check["value"] <= check["max"]
    return {
        "benchmark": "tracing",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
            "opentelemetry_sdk": _version("opentelemetry-sdk"),
            "otel_instrumentation_aiohttp_server": _version("opentelemetry-instrumentation-aiohttp-server"),
        },
        "generator": args.generator,
        "connections": args.connections,
        "rounds_run": args.rounds,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "bsp": {k: v for k, v in os.environ.items() if k.startswith("OTEL_BSP_")} or "SDK defaults",
        "phases": list(phases.values()),
        "cost_per_request_us": phases[SAMPLED_100]["cost_per_request_us"],
        "cost_per_request_us_instrumentation": phases[INSTRUMENTED]["cost_per_request_us"],
        "cost_per_request_us_1pct": phases[SAMPLED_1]["cost_per_request_us"],
        "targets": TARGETS,
        "target_checks": checks,
        "meets_targets": all(c["met"] for c in checks.values()),
        "enqueued_verified": all(r["enqueued_verified"] for r in rounds if r["phase"] != BARE),
        "worker": worker,
        "rounds": rounds,
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Redis and the receiver, the coordinator's rounds, then the worker's; the report."""
    for name in [k for k in os.environ if k.startswith("OTEL_") and not k.startswith("OTEL_BSP_")]:
        log(f"ignoring {name} of this environment: each phase sets its own")
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="opsdeck-bench-") as name:
        tmp = Path(name)
        embedded = EmbeddedRedis(tmp / "redis", aof=False)
        redis_url = embedded.start()
        assert embedded.proc is not None
        log(f"redis-server on {redis_url}")
        receiver = Receiver(tmp)
        try:
            rounds, spans = await coordinator_rounds(args, redis_url, embedded.proc.pid, receiver, tmp)
            worker = await asyncio.to_thread(worker_rounds, args, redis_url, receiver)
        finally:
            receiver.stop()
            embedded.stop()
    return report(args, rounds, spans, worker)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--serve`` and friends are internal: the child processes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk (C, one thread; Debian package wrk) or the aiohttp generator; auto = wrk if on PATH",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up s per server, before round 1")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=12, help="rounds (each: every phase once)")
    parser.add_argument("--messages", type=int, default=20_000, help="no-op tasks per worker round")
    parser.add_argument("--worker-rounds", type=int, default=3, help="worker rounds (each: off and on)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 2 s; worker 3000 x 1")
    parser.add_argument("--serve", choices=(*PHASES, "receiver"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--var-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--status", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.rounds = 0.5, 2.0, 2
        args.messages, args.worker_rounds = 3000, 1
    if min(args.connections, args.rounds, args.messages, args.worker_rounds, args.threads) < 1:
        parser.error("--connections, --rounds, --messages, --worker-rounds and --threads must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    args.clients = 1  # coordinator.py's generator options this benchmark does not vary
    return args


def main(argv: list[str] | None = None) -> None:
    """Serve (child mode) or run the whole benchmark and print its JSON report."""
    args = parse_args(argv)
    if args.serve == "receiver":
        serve_receiver(args.status)
        return
    if args.serve:
        serve(args.serve, args.port, args.redis_url, args.var_dir)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup in ``finally``
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
