"""Process settings from the environment (pydantic-settings); one ``Settings`` per process.

Every field is an environment variable of the same name in upper case; the README's
table lists them all. Build one with :func:`load_settings` in ``__main__`` and pass it down.
"""

from __future__ import annotations

import os
import secrets
import socket
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.keys import Keys
from shared.ratelimit import PRODUCTION_DEFAULTS, ROUTE_CLASSES, RateSpec, parse_rate

if TYPE_CHECKING:  # shared.deploy imports the settings' users; the file is loaded at validation
    from shared.bandit_checkpoints import RollbackPolicy
    from shared.bandit_schedule import AlphaSchedule
    from shared.deploy.config import ServicesFile

#: Minimum length of ``JWT_SECRET`` in bytes (HS256 wants a key at least as long as its hash).
MIN_SECRET_BYTES = 32

#: Default Redis URL for a process started on its own (``make up`` always sets ``REDIS_URL``).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: File under ``OPSDECK_VAR_DIR`` that holds the development JWT secret.
DEV_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name, not a secret


class Settings(BaseSettings):
    """Every knob of every Opsdeck process, read from the environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)
    #: The services file, loaded by :meth:`_load_services` (read it as :attr:`services`).
    _services: ServicesFile = PrivateAttr()

    opsdeck_env: Literal["development", "production"] = "development"
    redis_url: str | None = None
    #: The message broker: unset or ``redis://`` (= REDIS_URL) is Dramatiq's Redis broker;
    #: ``amqp://`` (one URL, or several nodes' separated by commas) is RabbitMQ.
    broker_url: str | None = None
    rabbitmq_queue_type: Literal["quorum", "classic"] = "quorum"
    rabbitmq_management_url: str | None = None
    #: Longest delay (s) RabbitMQ holds for a worker; longer ones wait in Redis (keep it well
    #: under the server's consumer_timeout, 30 min by default).
    rabbitmq_max_hold: float = Field(default=600.0, ge=1.0, le=86_400.0)
    #: Outbox entries read by a relay and unconfirmed this long (s) are taken over by another.
    outbox_claim_after: float = Field(default=30.0, ge=1.0, le=3600.0)
    key_prefix: str = "opsdeck:"
    dramatiq_namespace: str = "dramatiq"
    jwt_secret: SecretStr | None = None
    metrics_token: SecretStr | None = None
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    #: OpenTelemetry's standard variables (shared.tracing): tracing is on when an endpoint is set.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    otel_service_name: str | None = None
    otel_resource_attributes: str | None = None
    otel_traces_sampler: Literal[
        "always_on", "always_off", "traceidratio",
        "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
    ] = "parentbased_always_on"  # fmt: skip
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0, le=1)
    otel_sdk_disabled: bool = False
    #: A trace's URL in Jaeger, Tempo, ... with ``{trace_id}``: the dashboard links task pages to it.
    trace_url_template: str | None = None
    log_level: str = "INFO"
    opsdeck_var_dir: Path = Path("var")

    coordinator_host: str = "127.0.0.1"
    coordinator_port: int = Field(default=8000, ge=1, le=65535)
    port: int | None = Field(default=None, ge=1, le=65535)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8001, ge=1, le=65535)
    dashboard_password: SecretStr | None = None
    dashboard_stream_interval: float = Field(default=1.0, ge=0.1, le=60)
    dashboard_probe_interval: float = Field(default=0.1, ge=0, le=10)
    dashboard_session_ttl: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    dashboard_login_attempts: int = Field(default=5, ge=1, le=1000)

    worker_id: str = Field(default_factory=socket.gethostname)
    worker_processes: int = Field(default=2, ge=0, le=64)
    worker_threads: int = Field(default=8, ge=1, le=256)
    worker_poll_interval: float = Field(default=5.0, gt=0, le=300)
    worker_idle_wait_ms: int = Field(default=100, ge=10, le=5000)
    #: Idle consumers wait for a wake-up (a message published for their queue) instead of polling.
    worker_idle_wakeup: bool = True
    worker_idle_max_wait_ms: int = Field(default=1000, ge=10, le=60_000)
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9191, ge=0, le=65535)
    shutdown_timeout: float = Field(default=25.0, ge=0, le=3600)
    broker_heartbeat_timeout: float = Field(default=10.0, ge=2, le=600)
    #: How long a running attempt's lease lasts without renewal (its process renews it every
    #: ``broker_heartbeat_timeout / 5``); unset = twice ``BROKER_HEARTBEAT_TIMEOUT``.
    task_lease_ttl: float | None = Field(default=None, ge=1, le=3600)

    task_ttl: int = Field(default=7 * 24 * 3600, ge=60)
    task_events_maxlen: int = Field(default=10_000, ge=100)
    task_max_retries: int = Field(default=2, ge=0, le=100)
    retry_min_backoff: float = Field(default=1.0, gt=0)
    retry_max_backoff: float = Field(default=10.0, gt=0)
    redis_timeout: float = Field(default=1.5, gt=0, le=30)
    #: ``/health`` reports the disk degraded when the filesystem of OPSDECK_VAR_DIR has less free.
    health_disk_min_free_mb: int = Field(default=1024, ge=0)

    knowledge_base_path: Path | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model_fast: str | None = None
    llm_model_balanced: str | None = None
    llm_model_creative: str | None = None
    llm_timeout: float = Field(default=10.0, gt=0, le=120)
    #: Traffic mix over the model tiers (shared.llm_tiers): ``tier=weight`` pairs.
    llm_tier_weights: str = "fast=60,balanced=30,creative=10"
    #: Calls per tier whose latency the health record's p50/p95 cover.
    llm_health_window: int = Field(default=50, ge=1, le=10_000)
    #: A tier without a call for this long (s) gets one tiny probe call (one worker per interval);
    #: 0 = no probes (and no staleness rule in /health/llm).
    llm_probe_interval: float = Field(default=300.0, ge=0, le=86_400)
    bandit_alpha: float = Field(default=1.0, ge=0, le=100)
    bandit_warmup: int = Field(default=1000, ge=0, le=10_000_000)
    #: ``linear:<start>:<end>:<decisions>`` decays α after warm-up (shared.bandit_schedule);
    #: unset (or ``off``) = every decision uses BANDIT_ALPHA.
    bandit_alpha_schedule: str | None = None
    #: Applied ratings between two checkpoints of the shared model (0: no checkpoints, no rollback).
    bandit_checkpoint_every: int = Field(default=500, ge=0, le=1_000_000)
    bandit_checkpoints_kept: int = Field(default=10, ge=2, le=100)
    #: Seconds between two automatic rollbacks (manual ones are not limited).
    bandit_rollback_cooldown: float = Field(default=48 * 3600.0, ge=0, le=365 * 86400.0)
    #: Ratings each window compared needs before the rollback check tests anything.
    bandit_rollback_min_samples: int = Field(default=200, ge=10, le=1_000_000)
    #: One-sided level of each rollback test (Bonferroni-corrected over the windows compared).
    bandit_rollback_significance: float = Field(default=0.001, gt=0, lt=0.5)
    coach_idle_wait_ms: int = Field(default=20, ge=1, le=5000)

    opsdeck_services: Path | None = Field(default=None, validate_default=True)
    render_api_url: str = "https://api.render.com"
    vercel_api_url: str = "https://api.vercel.com"
    deploy_poll_interval: float = Field(default=5.0, gt=0, le=300)
    deploy_lock_ttl: float = Field(default=30.0, ge=1, le=600)
    deploy_http_retries: int = Field(default=4, ge=0, le=20)
    deploy_http_backoff: float = Field(default=0.5, gt=0, le=60)
    deploy_http_timeout: float = Field(default=10.0, gt=0, le=300)
    #: Deploy notifications (worker.deploy.notify): the *name* of the environment variable that
    #: holds a Slack-compatible incoming-webhook URL (the URL is a secret: never in a file or log).
    deploy_notify_webhook_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    #: The name of the variable holding a generic JSON webhook URL for the same events.
    deploy_notify_generic_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    #: The name of the variable holding the secret that signs the generic webhook's events.
    deploy_notify_secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    #: The dashboard's public base URL, for links in notifications (unset: DASHBOARD_HOST:PORT).
    dashboard_url: str | None = None

    #: Per-subject rate limits by route class (shared.ratelimit): ``<rate>/s[:<burst>]`` or
    #: ``off``; unset = off in development, shared.ratelimit.PRODUCTION_DEFAULTS in production.
    rate_limit_submit: str | None = None
    rate_limit_chat: str | None = None
    rate_limit_read: str | None = None
    rate_limit_deploy: str | None = None

    @field_validator("rate_limit_submit", "rate_limit_chat", "rate_limit_read", "rate_limit_deploy")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        """``<rate>/s[:<burst>]`` or ``off`` (refused with the expected form); empty = unset."""
        value = (value or "").strip() or None
        if value is not None:
            parse_rate(value)
        return value

    @cached_property
    def rate_limits(self) -> dict[str, RateSpec]:
        """The bucket of every route class that has one (a class left out is not limited)."""
        limits: dict[str, RateSpec] = {}
        for name in ROUTE_CLASSES:
            value: str | None = getattr(self, f"rate_limit_{name}")
            if value is None and self.production:
                value = PRODUCTION_DEFAULTS[name]
            spec = parse_rate(value) if value is not None else None
            if spec is not None:
                limits[name] = spec
        return limits

    @field_validator("bandit_alpha_schedule")
    @classmethod
    def _check_alpha_schedule(cls, value: str | None) -> str | None:
        """``linear:<start>:<end>:<decisions>`` (refused with the expected form); empty = unset."""
        from shared.bandit_schedule import parse_schedule

        return str(schedule) if (schedule := parse_schedule(value)) is not None else None

    @property
    def alpha_schedule(self) -> AlphaSchedule | None:
        """``BANDIT_ALPHA_SCHEDULE`` parsed (None: the constant BANDIT_ALPHA)."""
        from shared.bandit_schedule import parse_schedule

        return parse_schedule(self.bandit_alpha_schedule)

    @property
    def rollback_policy(self) -> RollbackPolicy:
        """The automatic rollback rule (shared.bandit_checkpoints) of these settings."""
        from shared.bandit_checkpoints import RollbackPolicy

        return RollbackPolicy(
            self.bandit_rollback_min_samples, self.bandit_rollback_significance, self.bandit_rollback_cooldown
        )

    @field_validator("llm_tier_weights")
    @classmethod
    def _check_tier_weights(cls, value: str) -> str:
        """``tier=weight,…`` (refused saying what is wrong); empty = the default mix."""
        from shared.llm_tiers import DEFAULT_WEIGHTS, parse_weights

        value = value.strip() or DEFAULT_WEIGHTS
        parse_weights(value)
        return value

    @property
    def tier_weights(self) -> dict[str, float]:
        """``LLM_TIER_WEIGHTS`` parsed: a weight per tier (0 for a tier not named)."""
        from shared.llm_tiers import parse_weights

        return parse_weights(self.llm_tier_weights)

    @property
    def llm_stale_after(self) -> float | None:
        """Seconds after which a tier's record is too old to vouch for it (/health/llm): two probe
        intervals and a call's timeout; None without probes."""
        if not self.llm_probe_interval:
            return None
        return 2 * self.llm_probe_interval + self.llm_timeout

    @property
    def llm_models(self) -> dict[str, str | None]:
        """The model of each tier (``LLM_MODEL_<TIER>``), None where unset."""
        return {
            "creative": self.llm_model_creative,
            "balanced": self.llm_model_balanced,
            "fast": self.llm_model_fast,
        }

    @field_validator("opsdeck_services", mode="before")
    @classmethod
    def _services_path(cls, value: object) -> Path | None:
        """Empty is unset; ``~`` is expanded (the file itself is read by :meth:`_load_services`)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return Path(str(value)).expanduser()

    @model_validator(mode="after")
    def _load_services(self) -> Settings:
        """Read and validate the services file now, so a bad one stops the process at start (a
        ConfigError naming the service and the field), and keep it as :attr:`services`."""
        from shared.deploy.config import ServicesFile, load_services

        path = self.opsdeck_services
        self._services = load_services(path) if path is not None else ServicesFile()
        return self

    @property
    def services(self) -> ServicesFile:
        """The services file (``OPSDECK_SERVICES``) as loaded with these settings; empty when unset."""
        return self._services

    @field_validator(
        "deploy_notify_webhook_env", "deploy_notify_generic_env", "deploy_notify_secret_env", mode="before"
    )
    @classmethod
    def _notify_env_name(cls, value: object) -> object:
        """Empty is unset (then the name must be a valid variable name: the pattern)."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def dashboard_base_url(self) -> str:
        """Where the dashboard is reached: DASHBOARD_URL, else its bind address (no trailing /)."""
        return (self.dashboard_url or f"http://{self.dashboard_host}:{self.dashboard_port}").rstrip("/")

    @field_validator("knowledge_base_path", mode="before")
    @classmethod
    def _check_playbook(cls, value: object) -> object:
        """A replacement playbook must exist and validate now, not at the first chat turn."""
        if value is None or value == "":
            return None
        from shared.playbook import load_playbook

        load_playbook(Path(str(value)))
        return value

    @field_validator("llm_base_url", "llm_model_fast", "llm_model_balanced", "llm_model_creative")
    @classmethod
    def _empty_is_unset(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = (value or "").strip() or None
        if info.field_name == "llm_base_url" and value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator(
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "trace_url_template",
        "dashboard_url",
    )
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = (value or "").strip() or None
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if value and info.field_name == "trace_url_template" and "{trace_id}" not in value:
            raise ValueError("must contain {trace_id}")
        return value

    @field_validator("otel_exporter_otlp_protocol")
    @classmethod
    def _check_protocol(cls, value: str) -> str:
        import importlib.util

        if value == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
            raise ValueError(
                "grpc needs `pip install opentelemetry-exporter-otlp-proto-grpc` (or use http/protobuf)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        from shared.transport.urls import is_rabbitmq, node_urls

        if not value:
            return None
        if is_rabbitmq(value):
            node_urls(value)  # each one an AMQP URL (ValueError names the bad one, redacted)
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with amqp:// or amqps:// (RabbitMQ) or redis:// (the Redis broker)")
        return value

    @model_validator(mode="after")
    def _check_redis_broker(self) -> Settings:
        """A ``redis://`` BROKER_URL must be the state store: the submit script writes the task and
        its Dramatiq message in one atomic call, so both live in the one Redis."""
        if self.broker_url and not self.rabbitmq and self.broker_url != self.effective_redis_url:
            raise ValueError(
                "BROKER_URL: a redis:// broker must be REDIS_URL itself"
                " (unset it, or set amqp:// for RabbitMQ)"
            )
        return self

    @property
    def rabbitmq(self) -> bool:
        """True when ``BROKER_URL`` names RabbitMQ."""
        from shared.transport.urls import is_rabbitmq

        return is_rabbitmq(self.broker_url)

    @property
    def tracing_enabled(self) -> bool:
        """True when an OTLP endpoint is set and ``OTEL_SDK_DISABLED`` is not (shared.tracing)."""
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        return bool(endpoint) and not self.otel_sdk_disabled

    @property
    def otel_traces_endpoint(self) -> str:
        """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as given, else
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces`` (OTLP/HTTP; gRPC takes it as given)."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint or ""
        return base if self.otel_exporter_otlp_protocol == "grpc" else base.rstrip("/") + "/v1/traces"

    @property
    def keys(self) -> Keys:
        """The Redis key names of this deployment (``KEY_PREFIX``, ``DRAMATIQ_NAMESPACE``): the
        process's one ``Keys``, the same object for every settings object of the same names."""
        return _keys(self.key_prefix, self.dramatiq_namespace)

    @property
    def production(self) -> bool:
        """True when ``OPSDECK_ENV=production``."""
        return self.opsdeck_env == "production"

    @property
    def effective_redis_url(self) -> str:
        """``REDIS_URL``, or the local default in development."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def effective_task_lease_ttl(self) -> float:
        """``TASK_LEASE_TTL``, or twice ``BROKER_HEARTBEAT_TIMEOUT``: a stall past the heartbeat
        timeout (redelivery) but within the lease defers the redelivered message instead of
        running it a second time."""
        return self.task_lease_ttl or 2 * self.broker_heartbeat_timeout

    @property
    def coordinator_bind_port(self) -> int:
        """``PORT`` wins over ``COORDINATOR_PORT`` (as on Render)."""
        return self.port or self.coordinator_port

    @cached_property
    def jwt_key(self) -> bytes:
        """The HS256 key; in development a generated one is kept under ``OPSDECK_VAR_DIR``."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value().encode()
        if self.production:
            raise ConfigError("JWT_SECRET is required in production (at least 32 bytes)")
        return dev_secret(self.opsdeck_var_dir)

    def check(self) -> None:
        """Refuse unsafe configurations with one clear line (raises ConfigError)."""
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < MIN_SECRET_BYTES:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        if self.production:
            if self.jwt_secret is None:
                raise ConfigError("JWT_SECRET is required in production (at least 32 bytes)")
            if self.redis_url is None:
                raise ConfigError("REDIS_URL is required in production")
        if self.retry_min_backoff > self.retry_max_backoff:
            raise ConfigError("RETRY_MIN_BACKOFF must not exceed RETRY_MAX_BACKOFF")
        if self.task_lease_ttl is not None and self.task_lease_ttl < self.broker_heartbeat_timeout:
            raise ConfigError(
                "TASK_LEASE_TTL must be at least BROKER_HEARTBEAT_TIMEOUT (leases are renewed every "
                "BROKER_HEARTBEAT_TIMEOUT / 5 seconds)"
            )
        every = self.bandit_checkpoint_every
        if every and self.bandit_rollback_min_samples > every:
            raise ConfigError(
                f"BANDIT_ROLLBACK_MIN_SAMPLES ({self.bandit_rollback_min_samples}) must not exceed "
                f"BANDIT_CHECKPOINT_EVERY ({every}): a checkpoint's window holds that many ratings"
            )
        models = (self.llm_model_fast, self.llm_model_balanced, self.llm_model_creative)
        if self.llm_base_url and not any(models):
            raise ConfigError("LLM_BASE_URL needs LLM_MODEL_FAST, LLM_MODEL_BALANCED or LLM_MODEL_CREATIVE")
        self._check_llm_mix()
        _ = self.jwt_key

    def _check_llm_mix(self) -> None:
        """With an LLM, some tier that has a model must have traffic weight."""
        from shared.llm_tiers import shares

        configured = [t for t, model in self.llm_models.items() if model]
        if self.llm_base_url and not shares(self.tier_weights, configured):
            raise ConfigError(
                f"LLM_TIER_WEIGHTS ({self.llm_tier_weights}) gives no weight to a tier with a model "
                f"(configured: {', '.join(configured)})"
            )


@cache
def _keys(prefix: str, dramatiq_namespace: str) -> Keys:
    """One ``Keys`` per prefix and namespace (a settings copy with other names gets its own)."""
    return Keys(prefix, dramatiq_namespace)


def dev_secret(var_dir: Path) -> bytes:
    """Read, or create once (0600, atomically), the development JWT secret."""
    path = var_dir / DEV_SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def load_settings(**overrides: object) -> Settings:
    """Build and check the process's Settings; raise ConfigError with one line on bad input."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{name}: {first['msg']}") from None
    settings.check()
    return settings
