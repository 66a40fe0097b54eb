"""The worker agent: runs the Dramatiq processes of this host, obeys control commands, reports.

- A :class:`~worker.supervisor.Supervisor` keeps ``WORKER_PROCESSES`` (or the operator's
  ``scale``) processes in the desired state (running, paused or stopped) and restarts crashed
  ones with capped backoff. The desired state is persisted in Redis and applied at start.
- Commands (start, stop, restart, pause, resume, scale) come from the agent's command stream and
  are answered accepted, then done or failed (:mod:`worker.control`).
- Every ``WORKER_POLL_INTERVAL`` seconds it writes a heartbeat key that expires after three
  intervals (a dead agent disappears by itself), runs Dramatiq's queue maintenance so the
  messages of killed processes are redelivered within seconds, and trims expired task indexes.
- SIGTERM/SIGINT: state ``stopping``, one TERM to each process (they stop consuming and finish
  in-flight work), SIGKILL what is left after ``SHUTDOWN_TIMEOUT``, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from types import FrameType
from typing import Any

import psutil
import redis

from shared import __version__, tracing
from shared.auth import Verifier
from shared.control import Command
from shared.errors import Unavailable
from shared.keys import Keys
from shared.procutil import pid_alive
from shared.settings import Settings
from shared.stats import MAX_TASKS_SHOWN, Heartbeat, ProcessStats, WorkerState
from shared.store import script_source
from shared.task_types import all_queues, task_types
from shared.tasks import TaskStatus
from shared.transport import broker_upkeep
from shared.transport.outbox import RelayThread
from worker.control import CommandIntake
from worker.metrics import (
    ACTIVE_SESSION_WINDOW,
    MULTIPROC_ENV,
    AgentCollector,
    build_registry,
    prepare_multiproc_dir,
    serve_metrics,
)
from worker.supervisor import Slot, Supervisor

log = logging.getLogger("worker.agent")

#: Seconds between checks of the child processes and the command stream.
TICK = 0.2
#: Extra seconds a command may take beyond SHUTDOWN_TIMEOUT before it is answered failed.
COMMAND_GRACE = 30.0
#: Expired task ids read from tasks:all per round trip when trimming the id index.
TRIM_CHUNK = 1000


class Agent:
    """Supervises Dramatiq processes, obeys control commands and publishes this host's heartbeat."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.keys = settings.keys
        self.id = settings.worker_id
        self.started_at = time.time()
        self.retired = {"processed": 0, "failed": 0}
        self.counters: dict[int, dict[str, int]] = {}
        #: pid → ids of the tasks it runs now (from its lease set, at most MAX_TASKS_SHOWN)
        self.running: dict[int, list[str]] = {}
        self.me = psutil.Process()
        self.me.cpu_percent(None)
        self._stop_requested = False
        self._shutting_down = False
        self.upkeep = broker_upkeep(settings, client, self.keys, f"agent-{self.id}")
        #: With RabbitMQ as the broker, this host's outbox relay (shared.transport.outbox).
        self.relay = RelayThread(settings) if settings.rabbitmq else None
        self._release = client.register_script(script_source("lease_release"))
        self.metrics_dir = prepare_multiproc_dir(settings.opsdeck_var_dir.resolve() / "metrics" / self.id)
        self.snapshot: dict[str, Any] = {"worker": self.id, "up": 1, "queues": {}, "redis_up": 0}
        env = {**os.environ, "WORKER_ID": self.id, MULTIPROC_ENV: str(self.metrics_dir)}
        self.supervisor = Supervisor(
            target=settings.worker_processes,
            env=env,
            shutdown_timeout=settings.shutdown_timeout,
            on_exit=self._retire,
        )
        self.intake = CommandIntake(client, self.keys, self.id)

    @property
    def state(self) -> WorkerState:
        """What the heartbeat reports."""
        sup = self.supervisor
        if self._shutting_down:
            return "stopped" if not sup.alive() else "stopping"
        if sup.draining:
            return "stopping"
        if sup.desired == "stopped":
            return "stopped" if not sup.alive() else "stopping"
        if sup.desired == "paused":
            return "paused"
        return "running"

    # -- lifecycle ------------------------------------------------------------------------------
    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: begin a graceful stop."""
        log.info("received %s: stopping", signal.Signals(signum).name)
        self._stop_requested = True

    def serve_metrics(self) -> None:
        """Serve ``/metrics`` on WORKER_METRICS_HOST:WORKER_METRICS_PORT (0 = off)."""
        settings = self.settings
        if not settings.worker_metrics_port:
            return
        registry = build_registry(self.metrics_dir, AgentCollector(lambda: self.snapshot))
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        serve_metrics(
            registry,
            settings.worker_metrics_host,
            settings.worker_metrics_port,
            token=token,
            verifier=Verifier(settings.jwt_key),
        )
        log.info(
            "metrics on http://%s:%d/metrics", settings.worker_metrics_host, settings.worker_metrics_port
        )

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit code."""
        self._apply_desired_at_start()
        if self.relay is not None:
            self.relay.start()
        next_beat = 0.0
        while not self._stop_requested:
            alive_before = len(self.supervisor.alive())
            self._read_reports()
            self.supervisor.tick()
            self._control()
            now = time.monotonic()
            if now >= next_beat or len(self.supervisor.alive()) != alive_before:
                self._periodic()
                next_beat = now + self.settings.worker_poll_interval
            time.sleep(TICK)
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self._shutting_down = True
        self._publish()
        self.supervisor.stop_everything()
        if self.relay is not None:
            self.relay.stop()
        self._publish()
        with contextlib.suppress(redis.RedisError):
            self.client.zrem(self.keys.workers, self.id)
        log.info("stopped")

    # -- control --------------------------------------------------------------------------------
    def _apply_desired_at_start(self) -> None:
        """Obey the persisted desired state; commands issued while we were down are settled by it."""
        try:
            state, processes = self.intake.desired()
            missed = self.intake.poll()
        except redis.RedisError as exc:
            log.warning("cannot read the desired state (%s); starting with the defaults", type(exc).__name__)
            return
        self.supervisor.want(state, processes)
        if state or processes is not None:
            log.info("desired state: %s, %s process(es)", state or "running", self.supervisor.target)
        for command in missed:
            self.intake.answer(command, "done", "applied from the desired state when the agent started")

    def _control(self) -> None:
        try:
            for command in self.intake.poll():
                self._execute(command)
            self.intake.settle()
        except redis.RedisError as exc:
            log.debug("command stream unavailable (%s)", type(exc).__name__)

    def _execute(self, command: Command) -> None:
        parent = tracing.context_from({tracing.TRACEPARENT: command.traceparent or ""})
        attributes = {"opsdeck.command.id": command.id, "opsdeck.command.action": command.action}
        with tracing.TRACER.start_as_current_span(
            f"control {command.action}", context=parent, kind=tracing.SpanKind.CONSUMER, attributes=attributes
        ):
            self._apply(command)

    def _apply(self, command: Command) -> None:
        sup = self.supervisor
        self.intake.answer(command, "accepted")
        timeout = self.settings.shutdown_timeout + COMMAND_GRACE
        if command.action == "stop":
            sup.want("stopped")
            self.intake.wait_for(command, lambda: not sup.alive(), timeout)
        elif command.action in ("start", "resume"):
            sup.want("running")
            self.intake.wait_for(command, self._converged, timeout)
        elif command.action == "pause":
            sup.want("paused")
            self.intake.wait_for(command, self._converged, timeout)
        elif command.action == "scale":
            sup.want(target=command.processes)
            self.intake.wait_for(command, self._converged, timeout)
        elif command.action == "restart":
            old = {s.proc.pid for s in sup.alive() if s.proc is not None}
            sup.want("running")
            sup.restart_all()

            def replaced() -> bool:
                pids = {s.proc.pid for s in sup.alive() if s.proc is not None}
                return self._converged() and not (pids & old)

            self.intake.wait_for(command, replaced, timeout)

    def _converged(self) -> bool:
        return self.supervisor.converged()

    def _retire(self, slot: Slot) -> None:
        """Fold a finished process's counters into the agent's totals and drop its key."""
        if slot.proc is None:
            return
        key = self.keys.worker_process(self.id, slot.proc.pid)
        try:
            raw = self.client.hgetall(key)
            self.client.delete(key)
            # its attempts stopped with it: their redelivery need not wait for the leases to expire
            self._release(
                keys=[self.keys.worker_process_leases(self.id, slot.proc.pid)],
                args=[self.keys.task_lease_prefix, f"{self.id}/{slot.proc.pid}"],
            )
        except redis.RedisError:
            raw = {}
        for name in ("processed", "failed"):
            self.retired[name] += int(raw.get(name.encode(), 0))
        self.counters.pop(slot.proc.pid, None)
        self.running.pop(slot.proc.pid, None)
        self._run_maintenance()  # its unacked messages come back once its heartbeat is stale

    # -- periodic work --------------------------------------------------------------------------
    def _periodic(self) -> None:
        try:
            self._read_counters()
            self._publish()
            self._run_maintenance()
            self._trim_indexes()
            self._read_queues()
            self.snapshot["redis_up"] = 1
        except redis.RedisError as exc:
            self.snapshot["redis_up"] = 0
            log.warning("redis unavailable (%s); will retry", type(exc).__name__)
        except Unavailable as exc:  # the broker (RabbitMQ) did not answer a depth read
            log.warning("broker unavailable (%s); will retry", exc)

    def _read_queues(self) -> None:
        """Depths of every queue (ready, delayed, dead), active chat sessions and the bandit's
        rollback counts for the metrics."""
        queues = all_queues()
        since = int((time.time() - ACTIVE_SESSION_WINDOW) * 1000)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.chat_active_sessions, "-inf", since - 1)
            pipe.zcard(self.keys.chat_active_sessions)
            pipe.xlen(self.keys.outbox)
            pipe.hmget(self.keys.bandit_guard(), ["rollbacks:auto", "rollbacks:manual"])
            _, active, outbox, rollbacks = pipe.execute()
        self.snapshot["active_sessions"] = active
        self.snapshot["bandit_rollbacks"] = {"auto": int(rollbacks[0] or 0), "manual": int(rollbacks[1] or 0)}
        if self.relay is not None:
            self.snapshot["outbox"] = outbox
        self.snapshot["queues"] = self.upkeep.depths(queues)

    def _read_reports(self) -> None:
        """Each process's pause report (cheap: one field per process, every tick)."""
        slots = [s for s in self.supervisor.slots if s.proc is not None]
        if not slots:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for slot in slots:
                    assert slot.proc is not None
                    pipe.hget(self.keys.worker_process(self.id, slot.proc.pid), "paused")
                replies = pipe.execute()
        except redis.RedisError:
            return
        for slot, raw in zip(slots, replies, strict=True):
            slot.reported_paused = None if raw is None else raw == b"1"

    def _read_counters(self) -> None:
        pids = [s.proc.pid for s in self.supervisor.slots if s.proc is not None]
        with self.client.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.hgetall(self.keys.worker_process(self.id, pid))
                pipe.srandmember(self.keys.worker_process_leases(self.id, pid), MAX_TASKS_SHOWN)
            replies = pipe.execute()
        for pid, raw, running in zip(pids, replies[::2], replies[1::2], strict=True):
            self.counters[pid] = {k.decode(): int(v) for k, v in raw.items()}
            self.running[pid] = sorted(t.decode() for t in running)

    def heartbeat(self) -> Heartbeat:
        """This agent's state and its processes' stats right now."""
        procs: list[ProcessStats] = []
        cpu = self.me.cpu_percent(None)
        rss = self.me.memory_info().rss
        for slot in self.supervisor.slots:
            if slot.proc is None:
                continue
            counters = self.counters.get(slot.proc.pid, {})
            p_cpu, p_rss = 0.0, 0
            if slot.ps is not None:
                with contextlib.suppress(psutil.Error):
                    p_cpu, p_rss = slot.ps.cpu_percent(None), slot.ps.memory_info().rss
            cpu += p_cpu
            rss += p_rss
            procs.append(
                ProcessStats(
                    pid=slot.proc.pid,
                    alive=slot.proc.poll() is None,
                    cpu_percent=p_cpu,
                    rss_bytes=p_rss,
                    started_at=slot.started_at,
                    restarts=slot.restarts,
                    in_flight=max(0, counters.get("in_flight", 0)),
                    processed=counters.get("processed", 0),
                    failed=counters.get("failed", 0),
                    tasks=self.running.get(slot.proc.pid, []),
                )
            )
        now = time.time()
        return Heartbeat(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            version=__version__,
            started_at=self.started_at,
            sent_at=now,
            uptime_seconds=round(now - self.started_at, 1),
            cpu_percent=round(cpu, 1),
            rss_bytes=rss,
            memory_percent=round(100.0 * rss / psutil.virtual_memory().total, 2),
            processes=sum(1 for p in procs if p.alive),
            processes_desired=self.supervisor.target if self.supervisor.desired != "stopped" else 0,
            threads=self.settings.worker_threads,
            in_flight=sum(p.in_flight for p in procs),
            processed=self.retired["processed"] + sum(p.processed for p in procs),
            failed=self.retired["failed"] + sum(p.failed for p in procs),
            queues=all_queues(),
            procs=procs,
        )

    def _publish(self) -> None:
        beat = self.heartbeat()
        capacity = max(1, beat.processes * beat.threads)
        self.snapshot.update(
            cpu_percent=beat.cpu_percent,
            memory_percent=beat.memory_percent,
            processes=beat.processes,
            utilization=round(beat.in_flight / capacity, 4),
            up=0 if beat.state == "stopped" else 1,
        )
        ttl_ms = int(3 * self.settings.worker_poll_interval * 1000)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.worker(self.id), beat.model_dump_json(), px=ttl_ms)
                pipe.zadd(self.keys.workers, {self.id: int(beat.sent_at * 1000)})
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat not written (%s)", type(exc).__name__)

    def _run_maintenance(self) -> None:
        """Run Dramatiq's maintenance on every queue: requeue unacked messages of dead brokers."""
        try:
            self.upkeep.maintain(all_queues())
        except (redis.RedisError, Unavailable) as exc:
            log.warning("queue maintenance skipped (%s)", type(exc).__name__)

    def _trim_indexes(self) -> None:
        """Drop index entries older than TASK_TTL (their records have expired). The id index
        (score 0, for prefix lookups) loses the ids tasks:all drops: read from tasks:all by age
        in chunks of TRIM_CHUNK and removed from both."""
        cutoff = (time.time() - self.settings.task_ttl) * 1_000_000
        all_index, ids_index = self.keys.tasks_all, self.keys.tasks_ids
        while True:
            old = self.client.zrangebyscore(all_index, "-inf", cutoff, start=0, num=TRIM_CHUNK)
            if not old:
                break
            with self.client.pipeline(transaction=False) as pipe:
                pipe.zrem(ids_index, *old)
                pipe.zrem(all_index, *old)
                pipe.execute()
            if len(old) < TRIM_CHUNK:
                break
        indexes = [self.keys.tasks_all]
        indexes += [self.keys.tasks_by_status(s) for s in TaskStatus]
        indexes += [self.keys.tasks_by_type(t) for t in task_types()]
        with self.client.pipeline(transaction=False) as pipe:
            for key in indexes:
                pipe.zremrangebyscore(key, "-inf", cutoff)
            pipe.execute()


def check_unique(client: redis.Redis, keys: Keys, worker_id: str) -> str | None:
    """An error line when another live agent already uses ``worker_id``."""
    try:
        raw = client.get(keys.worker(worker_id))
    except redis.RedisError:
        return None
    if raw is None:
        return None
    try:
        beat: dict[str, Any] = Heartbeat.model_validate_json(raw).model_dump()
    except ValueError:
        return None
    same_host = beat["host"] == socket.gethostname()
    if beat["state"] != "stopped" and not (same_host and not pid_alive(beat["pid"])):
        return (
            f"WORKER_ID {worker_id!r} is in use by pid {beat['pid']} on {beat['host']}; "
            "set a distinct WORKER_ID per agent"
        )
    return None
