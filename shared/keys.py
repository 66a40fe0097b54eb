"""Every Redis key and channel name Opsdeck uses, in one place.

Opsdeck's own keys live under ``KEY_PREFIX`` (default ``opsdeck:``) so two deployments can
share one Redis; Dramatiq's keys live under its namespace (default ``dramatiq``): the transport
names them (:mod:`shared.transport.redis_keys`) and ``Keys`` hands them on.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.transport.redis_keys import BrokerKeys


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (a prefix and a Dramatiq namespace)."""

    prefix: str = "opsdeck:"
    dramatiq_namespace: str = "dramatiq"

    # -- task store --------------------------------------------------------------------------
    def task(self, task_id: str) -> str:
        """Hash: one task record (type, queue, status, payload, result, timestamps, ...)."""
        return f"{self.prefix}task:{task_id}"

    def task_lease(self, task_id: str) -> str:
        """String with an expiry: ``<worker>/<pid> <attempt id>`` of the process running the task's
        current attempt, renewed by that process; while it lives, a redelivery is deferred."""
        return f"{self.task_lease_prefix}{task_id}"

    @property
    def task_lease_prefix(self) -> str:
        """Prefix of task lease keys (used by the Lua scripts to build ``task_lease(id)``)."""
        return f"{self.prefix}lease:"

    @property
    def task_prefix(self) -> str:
        """Prefix of task record keys (used by the Lua scripts to build ``task(id)``)."""
        return f"{self.prefix}task:"

    @property
    def tasks_all(self) -> str:
        """Sorted set: every task id, scored by creation time in microseconds."""
        return f"{self.prefix}tasks:all"

    @property
    def tasks_ids(self) -> str:
        """Sorted set: every task id with score 0, so ``ZRANGEBYLEX [p [p\\xff`` finds the ids that
        start with ``p`` (the 8-character ids the lists show) without a scan. Written by
        ``submit.lua`` with the record, trimmed with :attr:`tasks_all` (the agent's housekeeping)."""
        return f"{self.prefix}tasks:ids"

    def tasks_by_status(self, status: str) -> str:
        """Sorted set: task ids currently in ``status``, scored by creation time (µs)."""
        return f"{self.prefix}tasks:status:{status}"

    @property
    def tasks_status_prefix(self) -> str:
        """Prefix of the per-status index keys (used by the Lua scripts)."""
        return f"{self.prefix}tasks:status:"

    def tasks_by_type(self, task_type: str) -> str:
        """Sorted set: task ids of one task type, scored by creation time (µs)."""
        return f"{self.tasks_type_prefix}{task_type}"

    @property
    def tasks_type_prefix(self) -> str:
        """Prefix of the per-type index keys (used by the Lua scripts)."""
        return f"{self.prefix}tasks:type:"

    def idempotency(self, subject: str, key: str) -> str:
        """String: the task id first submitted by ``subject`` with this idempotency key, named
        ``idem2:<length of subject in UTF-8 bytes>:<subject>:<key>``: one name per pair, whatever
        colons either part holds."""
        return f"{self.idempotency_prefix}{len(subject.encode())}:{subject}:{key}"

    @property
    def idempotency_prefix(self) -> str:
        """Prefix of idempotency keys (no old-form name starts with it: ``idem2:`` ≠ ``idem:``)."""
        return f"{self.prefix}idem2:"

    def legacy_idempotency(self, subject: str, key: str) -> str:
        """String: an idempotency key in the form used before 2026-12, ``idem:<subject>:<key>``.
        Ambiguous (``alice`` + ``x:K`` and ``alice:x`` + ``K`` share a name), so ``submit.lua``
        trusts one only for the subject and key its task records; read, never written, until
        the last of them expires (TASK_TTL after the upgrade)."""
        return f"{self.legacy_idempotency_prefix}{subject}:{key}"

    @property
    def legacy_idempotency_prefix(self) -> str:
        """Prefix of old-form idempotency keys (used by ``submit.lua``)."""
        return f"{self.prefix}idem:"

    @property
    def task_events(self) -> str:
        """Stream (capped): task lifecycle events ``{id, type, status, ts, worker}``."""
        return f"{self.prefix}events:tasks"

    def stats_minute(self, minute: int) -> str:
        """Hash (expires after 8 days): task rollup of one minute (epoch minute): attempts
        ``processed``, ``failed``, ``retried``, ``duration_ms_sum``, ``duration_count``, final
        outcomes ``tasks``/``tasks_failed``, the latency histogram ``lat:<i>``
        (:mod:`dashboard.latency_histogram`), and per type ``processed:<type>``, ``failed:<type>``,
        ``tasks:<type>``, ``tasks_failed:<type>``, ``lat:<type>:<i>``;
        the coaching bandit's ``bandit:*`` counters (decisions, pulls, UCB buckets, ratings,
        rewards: :mod:`shared.bandit_rollup`)."""
        return f"{self.prefix}stats:minute:{minute}"

    @property
    def stats_minute_prefix(self) -> str:
        """Prefix of the per-minute rollup keys (used by the Lua scripts)."""
        return f"{self.prefix}stats:minute:"

    # -- workers -----------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set: worker agent ids scored by their last heartbeat (ms)."""
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        """String (JSON, expires after 3 poll intervals): a worker agent's heartbeat."""
        return f"{self.prefix}worker:{worker_id}"

    def worker_process(self, worker_id: str, pid: int) -> str:
        """Hash: counters of one Dramatiq process (processed, failed, in_flight, duplicates)."""
        return f"{self.prefix}worker:{worker_id}:proc:{pid}"

    def worker_process_leases(self, worker_id: str, pid: int) -> str:
        """Set: ids of the tasks whose running attempt one Dramatiq process holds a lease on
        (the agent releases them when the process dies)."""
        return f"{self.prefix}worker:{worker_id}:proc:{pid}:leases"

    @property
    def llm_tiers(self) -> str:
        """Hash: LLM tier (``creative``/``balanced``/``fast``) → JSON ``{breaker, outcome, detail,
        at, worker, probe, last_success, last_failure, last_error, p50_ms, p95_ms, calls}`` of the
        last call a worker process made with that tier (written by ``worker/coach/lua/llm_report.lua``):
        its breaker's state after the call (``closed``/``half_open``/``open``),
        ``ok``/``error``/``invalid``/``rejected``, the failure, the time (ms), ``<worker>/<pid>``,
        whether it was an idle-tier probe, the times (ms) of the last success and failure and the
        latency percentiles over the tier's last LLM_HEALTH_WINDOW calls; read by the
        coordinator's ``/health`` and ``/health/llm``."""
        return f"{self.prefix}llm:tiers"

    def llm_latency(self, tier: str) -> str:
        """List (newest first, capped at LLM_HEALTH_WINDOW): latency (ms) of a tier's last calls."""
        return f"{self.prefix}llm:latency:{tier}"

    def llm_probe(self, tier: str) -> str:
        """String (expires after LLM_PROBE_INTERVAL): lease of the one worker process that may probe
        an idle tier in this interval (``SET NX EX``), holding ``<worker>/<pid>``."""
        return f"{self.prefix}llm:probe:{tier}"

    # -- worker control --------------------------------------------------------------------------
    def worker_desired(self, worker_id: str) -> str:
        """Hash: the state an operator wants for an agent (state, processes); obeyed after restarts."""
        return f"{self.prefix}worker:{worker_id}:desired"

    def worker_commands(self, worker_id: str) -> str:
        """Stream (capped): control commands for one agent, in the order they were issued."""
        return f"{self.prefix}worker:{worker_id}:commands"

    def worker_command_cursor(self, worker_id: str) -> str:
        """String: id of the last command stream entry the agent has handled."""
        return f"{self.prefix}worker:{worker_id}:commands:cursor"

    def command(self, command_id: str) -> str:
        """Hash (expires): one control command with its reply (accepted / done / failed, reason)."""
        return f"{self.prefix}command:{command_id}"

    def command_idempotency(self, key: str) -> str:
        """String (expires): the command id first issued with this idempotency key."""
        return f"{self.prefix}command:idem:{key}"

    @property
    def paused_queues(self) -> str:
        """Set: queues no worker process consumes until resumed."""
        return f"{self.prefix}queues:paused"

    @property
    def audit(self) -> str:
        """Stream (capped, ``AUDIT_MAXLEN``): one entry per control action or command (fields ``id``
        (the command id), ``command`` JSON, ``status``, ``reason``); entries of older versions may be
        three per command (pending, accepted, done), read as one."""
        return f"{self.prefix}audit"

    @property
    def audit_outcomes(self) -> str:
        """Hash: command id → JSON ``{status, reason, updated_at}``, the outcome of the audit entry
        of that command, updated in place by the agent's replies; trimmed with the stream."""
        return f"{self.prefix}audit:outcomes"

    # -- rate limits ---------------------------------------------------------------------------
    def rate_limit(self, route_class: str, subject: str) -> str:
        """String (µs, expires when the bucket is full again): the token bucket of one token
        subject for one route class (shared.ratelimit), as GCRA's theoretical arrival time in
        Redis server time. One name per pair: the class has no colon, the subject is the rest."""
        return f"{self.prefix}ratelimit:{route_class}:{subject}"

    # -- dashboard ---------------------------------------------------------------------------
    def login_failures(self, client: str) -> str:
        """String (INCR, expires): failed dashboard logins from one client address in the window."""
        return f"{self.prefix}dashboard:login_failures:{client}"

    def saved_views(self, subject: str) -> str:
        """Hash: one dashboard user's saved task views, name → the tasks page's filter query
        (``type=fail&status=failed``), at most ``dashboard.views.MAX_VIEWS``."""
        return f"{self.prefix}dashboard:views:{subject}"

    def revoked_session(self, session_id: str) -> str:
        """String (expires with the session): a dashboard session ended by logout."""
        return f"{self.prefix}dashboard:revoked:{session_id}"

    # -- the broker's own keys (named by the transport: shared.transport.redis_keys) -----------
    @property
    def broker(self) -> BrokerKeys:
        """Dramatiq's key names under this deployment's namespace."""
        return BrokerKeys(self.dramatiq_namespace)

    def queue(self, queue_name: str) -> str:
        """List: ids of ready messages of a Dramatiq queue."""
        return self.broker.queue(queue_name)

    def queue_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue."""
        return self.broker.queue_messages(queue_name)

    def delay_queue(self, queue_name: str) -> str:
        """List: ids of delayed messages (retries with backoff) of a Dramatiq queue."""
        return self.broker.delay_queue(queue_name)

    def dead_letters(self, queue_name: str) -> str:
        """Sorted set: dead-lettered message ids of a Dramatiq queue."""
        return self.broker.dead_letters(queue_name)

    def dead_letter_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue's dead letters."""
        return self.broker.dead_letter_messages(queue_name)

    def delay_queue_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue's delayed messages."""
        return self.broker.delay_queue_messages(queue_name)

    @property
    def queue_wakeups(self) -> str:
        """Pub/sub channel: the name of a queue that just got a message (published by the submit
        script and by the workers' enqueues); idle consumers wait on it instead of polling."""
        return f"{self.prefix}queues:wake"

    @property
    def outbox(self) -> str:
        """Stream (RabbitMQ transport): messages recorded with their task and not yet confirmed by
        RabbitMQ; fields ``q`` (queue to publish to) and ``m`` (the message); consumer group ``relay``."""
        return f"{self.prefix}outbox"

    @property
    def outbox_scheduled(self) -> str:
        """Sorted set (RabbitMQ transport): delays too long to hold in RabbitMQ (JSON ``{q, m}``)
        scored by the ms when the relay may publish them (see shared.transport.rabbitmq)."""
        return f"{self.prefix}outbox:scheduled"

    def dramatiq_acks(self, broker_id: str, queue_name: str) -> str:
        """Set: ids of messages a Dramatiq broker (process) fetched from a queue and not acked yet."""
        return self.broker.acks(broker_id, queue_name)

    @property
    def broker_heartbeats(self) -> str:
        """Sorted set: Dramatiq broker ids scored by their last dispatch call (ms)."""
        return self.broker.heartbeats

    # -- coaching bandit (LinUCB) -----------------------------------------------------------
    def bandit_state(self, name: str = "coach") -> str:
        """Hash: every arm's LinUCB state (packed float64 ``A``, ``A⁻¹``, ``b``, ``θ``) and counters."""
        return f"{self.prefix}bandit:{name}:state"

    def bandit_decisions(self, name: str = "coach") -> str:
        """String (INCR): decisions made by all processes; the first ``warmup`` are uniform random."""
        return f"{self.prefix}bandit:{name}:decisions"

    def bandit_rated(self, name: str = "coach") -> str:
        """Set: ``session_id:turn_number`` of every rating applied (a rating counts once)."""
        return f"{self.prefix}bandit:{name}:rated"

    def bandit_log(self, name: str = "coach") -> str:
        """Stream: every rating applied, in order (rating key, arm, packed context, packed reward)."""
        return f"{self.prefix}bandit:{name}:log"

    def bandit_window(self, name: str = "coach") -> str:
        """List (capped, newest first): ``arm:reward`` of the last ratings, for monitoring statistics."""
        return f"{self.prefix}bandit:{name}:window"

    def bandit_guard(self, name: str = "coach") -> str:
        """Hash: checkpoint and rollback bookkeeping — ``applied`` (ratings applied, ever),
        ``seq`` (last checkpoint id), ``seg:{arm}:n|s|q`` (count, sum, sum of squares of the rewards
        since the last checkpoint), ``pending`` (a rollback check is due), ``last_check`` (JSON),
        ``last_auto_ms``, ``rollbacks:auto`` and ``rollbacks:manual`` (counts)."""
        return f"{self.prefix}bandit:{name}:guard"

    def bandit_checkpoints(self, name: str = "coach") -> str:
        """Hash: the kept checkpoints' model state, ``{id}:{arm}:{m|n|reward_sum|updates|since}``."""
        return f"{self.prefix}bandit:{name}:checkpoints"

    def bandit_checkpoint_meta(self, name: str = "coach") -> str:
        """Hash: checkpoint id → JSON (applied count, time, log entry id, its window's reward sums)."""
        return f"{self.prefix}bandit:{name}:checkpoint_meta"

    def bandit_rollbacks(self, name: str = "coach") -> str:
        """List (capped, newest first): JSON record of every rollback (when, trigger, target, why)."""
        return f"{self.prefix}bandit:{name}:rollbacks"

    # -- coaching chat -------------------------------------------------------------------------
    @property
    def chat_active_sessions(self) -> str:
        """Sorted set: chat session ids scored by their last answered turn (ms); feeds the
        ``coordinator_active_sessions`` gauge (sessions active in the last 15 minutes)."""
        return f"{self.prefix}chat:active"

    def chat_turns(self, session_id: str) -> str:
        """String (INCR, expires after TASK_TTL): the last turn number handed out in a chat session."""
        return f"{self.prefix}chat:{session_id}:turns"

    def chat_turn(self, session_id: str, turn_number: int) -> str:
        """Hash (expires after TASK_TTL): one answered turn — the bandit's ``arm``, ``propensity``,
        ``exploration``, packed context ``x`` and ``decision``, the owning ``task``, the suggestion."""
        return f"{self.prefix}chat:{session_id}:turn:{turn_number}"

    # -- deploys -----------------------------------------------------------------------------
    def deploy(self, deploy_id: str) -> str:
        """Hash: one deploy record (service, version, status, step, weight, gates, provider ids, ...)."""
        return f"{self.prefix}deploy:{deploy_id}"

    @property
    def deploys_all(self) -> str:
        """Sorted set: every deploy id, scored by creation time (ms)."""
        return f"{self.prefix}deploys:all"

    def deploys_by_service(self, service: str) -> str:
        """Sorted set: deploy ids of one service, scored by creation time (ms)."""
        return f"{self.prefix}deploys:service:{service}"

    def deploy_active(self, service: str) -> str:
        """String: id of the one deploy of ``service`` that may run now (deleted when it ends)."""
        return f"{self.prefix}deploys:active:{service}"

    def deploy_stable(self, service: str) -> str:
        """Hash: the stable version of a service (version, deploy_id, provider_deploy_id, at)."""
        return f"{self.prefix}deploys:stable:{service}"

    def deploy_call(self, deploy_id: str, step: int | str) -> str:
        """String: provider call marker of one step (``pending:<ms>`` then ``done:<provider id>``)."""
        return f"{self.prefix}deploy:{deploy_id}:call:{step}"

    def deploy_notified(self, deploy_id: str) -> str:
        """Hash (expires): notifications of one deploy — per event the message that owns its
        delivery, per event and channel ``sent`` (one message per event, whatever is redelivered)."""
        return f"{self.prefix}deploy:{deploy_id}:notified"

    def deploy_lock(self, deploy_id: str) -> str:
        """String (expires): lock held by the one worker thread changing a deploy right now."""
        return f"{self.prefix}deploy:{deploy_id}:lock"
