"""The process supervisor of a worker agent: keeps the wanted number of Dramatiq processes in the
wanted state, restarts crashed ones with backoff, drains on stop, and never blocks the agent.

States it drives towards (set by :meth:`Supervisor.want`): ``running`` (``target`` processes
consuming), ``paused`` (processes alive but not consuming: SIGUSR1 / SIGUSR2 toggles it, and a
process started while paused starts paused) and ``stopped`` (no process; each got one SIGTERM
and finished its in-flight work, or was killed after ``SHUTDOWN_TIMEOUT``). A process reports
whether it is paused (the agent copies that into ``Slot.reported_paused``); until the report
matches, the signal is sent again every second, so a signal that reached a process before it was
ready to handle it (it starts with both ignored) is not lost.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from shared.control import DesiredState
from shared.procutil import python_module, spawn

log = logging.getLogger("worker.supervisor")

#: Longest wait before restarting a crashed process (seconds).
MAX_RESTART_BACKOFF = 30.0
#: A process that ran this long before exiting resets its backoff (seconds).
STABLE_AFTER = 60.0
#: Seconds between repeats of a pause/resume signal a process has not acknowledged yet.
RESIGNAL_AFTER = 1.0
#: Exit code of a process that stopped on purpose to be started afresh (not a crash).
RECYCLE_EXIT = 75
#: Environment variable telling a new process to start paused.
START_PAUSED_ENV = "WORKER_START_PAUSED"


@dataclass
class Slot:
    """One process position: the running process, if any, and its restart bookkeeping."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    next_start: float = 0.0
    #: Monotonic deadline after which a process told to stop is killed (None: not stopping).
    stop_deadline: float | None = None
    #: What the process last reported (None: no report yet).
    reported_paused: bool | None = None
    last_signal: float = 0.0


class Supervisor:
    """Owns the agent's Dramatiq processes."""

    def __init__(
        self,
        *,
        target: int,
        env: dict[str, str],
        shutdown_timeout: float,
        on_exit: Callable[[Slot], None],
    ) -> None:
        self.env = env
        self.shutdown_timeout = shutdown_timeout
        self.on_exit = on_exit
        self.slots: list[Slot] = []
        self.target = target
        self.desired: DesiredState = "running"
        self._next_index = 0

    # -- what the operator wants -------------------------------------------------------------------
    def want(self, state: DesiredState | None = None, target: int | None = None) -> None:
        """Change the desired state and/or process count; :meth:`tick` gets there."""
        if target is not None:
            self.target = target
        if state is not None:
            self.desired = state

    def restart_all(self) -> None:
        """Drain every process; :meth:`tick` starts replacements once each one has exited."""
        for slot in self.slots:
            self._stop(slot)
            slot.failures, slot.next_start = 0, 0.0

    # -- the loop ----------------------------------------------------------------------------------
    def tick(self) -> None:
        """Reap exits, kill overdue stops, then converge on the desired state and count."""
        now = time.monotonic()
        self._reap(now)
        live = [s for s in self.slots if s.stop_deadline is None]
        if self.desired == "stopped":
            for slot in live:
                self._stop(slot)
            return
        for slot in live[self.target :]:  # scale down: the newest positions go first
            self._stop(slot)
        while len([s for s in self.slots if s.stop_deadline is None]) < self.target:
            self.slots.append(Slot(self._next_index))
            self._next_index += 1
        want_paused = self.desired == "paused"
        for slot in self.slots:
            if slot.stop_deadline is not None:
                continue
            if slot.proc is None:
                if now >= slot.next_start:
                    self._start(slot, paused=want_paused)
            elif (
                slot.reported_paused is not None
                and slot.reported_paused != want_paused
                and now - slot.last_signal >= RESIGNAL_AFTER
            ):
                slot.proc.send_signal(signal.SIGUSR1 if want_paused else signal.SIGUSR2)
                slot.last_signal = now

    def converged(self) -> bool:
        """True when exactly ``target`` processes run, none is draining, all in the wanted state."""
        alive = self.alive()
        paused = self.desired == "paused"
        return (
            not self.draining
            and len(alive) == self.target
            and all(s.reported_paused is paused for s in alive)
        )

    @property
    def draining(self) -> bool:
        """True while some process has been told to stop and has not exited yet."""
        return any(s.stop_deadline is not None and s.proc is not None for s in self.slots)

    def alive(self) -> list[Slot]:
        """Slots whose process is running."""
        return [s for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def stop_everything(self) -> None:
        """Blocking stop for agent shutdown: drain all, kill what outlives SHUTDOWN_TIMEOUT."""
        self.desired = "stopped"
        for slot in self.slots:
            self._stop(slot)
        while self.draining:
            self._reap(time.monotonic())
            time.sleep(0.1)

    # -- mechanics ---------------------------------------------------------------------------------
    def _start(self, slot: Slot, *, paused: bool) -> None:
        env = {**self.env, START_PAUSED_ENV: "1" if paused else ""}
        slot.proc = spawn(python_module("worker.process"), env=env, ignore_usr=True)
        slot.started_at = time.time()
        slot.reported_paused = None
        try:
            slot.ps = psutil.Process(slot.proc.pid)
            slot.ps.cpu_percent(None)
        except psutil.Error:
            slot.ps = None
        log.info("started process %d (slot %d%s)", slot.proc.pid, slot.index, ", paused" if paused else "")

    def _stop(self, slot: Slot) -> None:
        if slot.stop_deadline is not None:
            return
        slot.stop_deadline = time.monotonic() + self.shutdown_timeout
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.send_signal(signal.SIGTERM)  # once: a second TERM makes Dramatiq exit hard

    def _reap(self, now: float) -> None:
        for slot in list(self.slots):
            proc = slot.proc
            if proc is not None and proc.poll() is None:
                if slot.stop_deadline is not None and now > slot.stop_deadline:
                    log.warning(
                        "process %d still busy after %.0fs: killing it", proc.pid, self.shutdown_timeout
                    )
                    proc.kill()
                    proc.wait()
                else:
                    continue
            if proc is not None:
                self._exited(slot, proc, now)
            if slot.stop_deadline is not None:  # a stop we asked for: the position is done
                self.slots.remove(slot)

    def _exited(self, slot: Slot, proc: subprocess.Popen[bytes], now: float) -> None:
        ran = time.time() - slot.started_at
        if slot.stop_deadline is None and proc.returncode == RECYCLE_EXIT:
            log.info("process %d asked to be restarted (after a Redis outage); restarting it", proc.pid)
            slot.next_start = now
        elif slot.stop_deadline is None:
            slot.failures = 0 if ran >= STABLE_AFTER else slot.failures + 1
            delay = min(MAX_RESTART_BACKOFF, 0.5 * 2 ** max(0, slot.failures - 1))
            log.warning(
                "process %d exited with %s after %.1fs; restarting in %.1fs",
                proc.pid,
                proc.returncode,
                ran,
                delay,
            )
            slot.restarts += 1
            slot.next_start = now + delay
        else:
            log.info("process %d stopped (exit %s)", proc.pid, proc.returncode)
        self.on_exit(slot)
        slot.proc, slot.ps, slot.reported_paused = None, None, None
