"""The services file (``OPSDECK_SERVICES``, YAML or JSON): what can be deployed, where, and how.

Provider targets (service ids, project ids, webhook and smoke URLs) come only from this file,
never from a request, so the API cannot be used to make the worker call arbitrary URLs.
Secrets are named by environment variable (``secret_env``, ``api_key_env``, ...), never inlined.

Building :class:`shared.settings.Settings` loads and validates the file named by
``OPSDECK_SERVICES`` into the settings (``settings.services``, passed down with them): a bad file
stops the process at start with one line naming the service and the field. With
``OPSDECK_SERVICES`` unset the catalog is empty and every deploy is refused with 422
"no services configured".
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.deploy.conditions import check as check_condition
from shared.errors import ConfigError

#: Service names: what the API, the Redis keys and git tags use.
SERVICE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
#: Names of environment variables that hold secrets.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
#: Names of the metrics under ``gates.metrics.queries``.
METRIC_NAME = r"^[a-z][a-z0-9_]{0,62}$"
#: Canary steps when a service names none (percent of traffic on the new version).
DEFAULT_STEPS = (1, 5, 25, 100)
#: The placeholder of the preview's address in smoke URLs and metric queries (blue-green).
PREVIEW_URL = "{preview_url}"
#: Rollout strategies.
Strategy = Literal["direct", "canary", "blue_green"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) > 2000:
        raise ValueError("must be an http:// or https:// URL")
    return value


class WebhookOptions(_Strict):
    """POST ``{deploy_id, service, version, step, weight}`` signed with HMAC-SHA256."""

    url: str
    secret_env: str = Field(pattern=ENV_NAME)
    status_url: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    _urls = field_validator("url", "status_url")(lambda v: v if v is None else _http_url(v))


class RenderOptions(_Strict):
    """Render's REST API (``service_id`` + API key), or a deploy-hook URL held in an env var."""

    service_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")
    api_key_env: str = Field(default="RENDER_API_KEY", pattern=ENV_NAME)
    deploy_hook_env: str | None = Field(default=None, pattern=ENV_NAME)
    version_kind: Literal["commit", "image"] = "commit"


class VercelOptions(_Strict):
    """Vercel's REST API: create a deployment of ``project_id``, optionally promote it at 100 %."""

    project_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    name: str | None = None
    token_env: str = Field(default="VERCEL_TOKEN", pattern=ENV_NAME)
    team_id_env: str = Field(default="VERCEL_TEAM_ID", pattern=ENV_NAME)
    target: str | None = "production"
    git_source: dict[str, Any] | None = None
    promote: bool = False


class CanaryOptions(_Strict):
    """Traffic steps (percent, increasing, ending at 100) and the pause between them."""

    steps: list[int] = Field(default=list(DEFAULT_STEPS), min_length=1, max_length=20)
    pause_seconds: float = Field(default=60.0, ge=0, le=86400)

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"every step must be between 1 and 100 (got {steps})")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must increase (got {steps})")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100 (got {steps})")
        return steps


class MetricThreshold(_Strict):
    """A Prometheus instant query (``{service}``/``{version}`` substituted) and how one measured
    value is judged: ``max`` (shorthand for ``success: result <= max``) or ``success``/``failure``
    conditions (:mod:`shared.deploy.conditions`); limits unset take the gates' ones."""

    query: str = Field(min_length=1, max_length=2000)
    max: float | None = None
    success: str | None = None
    failure: str | None = None
    failure_limit: int | None = Field(default=None, ge=0, le=10000)
    inconclusive_limit: int | None = Field(default=None, ge=0, le=10000)
    consecutive_error_limit: int | None = Field(default=None, ge=0, le=10000)

    _conditions = field_validator("success", "failure")(lambda v: check_condition(v))

    @model_validator(mode="after")
    def _judged(self) -> MetricThreshold:
        if self.max is not None and self.success is not None:
            raise ValueError("set max or success, not both")
        if self.max is None and self.success is None and self.failure is None:
            raise ValueError("needs max, success or failure")
        return self


class MetricsGate(_Strict):
    """Thresholds read from a Prometheus-compatible ``/api/v1/query`` URL: the two named ones and
    any number of others under ``queries`` (``{name: {query, success, failure, ...}}``)."""

    query_url: str
    error_rate: MetricThreshold | None = None
    p99_seconds: MetricThreshold | None = None
    queries: dict[str, MetricThreshold] = Field(default_factory=dict, max_length=20)

    _url = field_validator("query_url")(lambda v: _http_url(v))

    @field_validator("queries")
    @classmethod
    def _names(cls, queries: dict[str, MetricThreshold]) -> dict[str, MetricThreshold]:
        import re

        for name in queries:
            if not re.match(METRIC_NAME, name) or name in ("error_rate", "p99_seconds"):
                raise ValueError(
                    f"metric name {name!r} must match {METRIC_NAME}, not error_rate or p99_seconds"
                )
        return queries


class GateOptions(_Strict):
    """Checks over each step's pause (an analysis run, :mod:`worker.deploy.analysis`): smoke URLs
    answer 2xx within the timeout; optional metrics. Every gate is sampled every
    ``interval_seconds`` (or the pause, if shorter) for the whole pause, at most ``count`` times,
    and once after the last step; the limits apply to each gate (a metric may set its own)."""

    smoke_urls: list[str] = Field(default_factory=list, max_length=20)
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    metrics: MetricsGate | None = None
    interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    count: int | None = Field(default=None, ge=1, le=10000)
    #: Failed measurements a gate may have in one step's run; one more rolls back.
    failure_limit: int = Field(default=0, ge=0, le=10000)
    #: Inconclusive measurements (neither condition met) a gate may have; one more pauses.
    inconclusive_limit: int = Field(default=0, ge=0, le=10000)
    #: Measurements in a row a metric source may fail to answer; one more pauses (inconclusive).
    consecutive_error_limit: int = Field(default=4, ge=0, le=10000)

    @field_validator("smoke_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        return [u if u.startswith(PREVIEW_URL) else _http_url(u) for u in urls]


class NginxOptions(_Strict):
    """Write an upstream block with weights to ``config_path``, then run ``reload_command``."""

    config_path: Path
    reload_command: list[str] = Field(default_factory=lambda: ["nginx", "-s", "reload"])
    upstream: str = Field(default="app", pattern=r"^[A-Za-z0-9_.-]+$")
    stable_server: str = Field(min_length=1, max_length=200)
    canary_server: str = Field(min_length=1, max_length=200)


class RouterOptions(_Strict):
    """Where canary weights go: ``none`` (full traffic at once) or ``nginx``."""

    type: Literal["none", "nginx"] = "none"
    nginx: NginxOptions | None = None

    @model_validator(mode="after")
    def _needs_options(self) -> RouterOptions:
        if self.type == "nginx" and self.nginx is None:
            raise ValueError("router type nginx needs an 'nginx' section")
        return self


class BlueGreenOptions(_Strict):
    """``strategy: blue_green``: the new version is deployed beside the stable one (the router's
    ``canary_server`` at weight 0, or a Vercel preview), analysed for ``pre_promotion_seconds``
    (the gates, ``{preview_url}`` in smoke URLs and queries being the preview's address), switched
    to at once (one router write or Vercel promote), and the old version kept for
    ``scale_down_delay_seconds``, during which a rollback switches back at once, then retired."""

    #: How long the gates are sampled against the preview before the switch (0: one round).
    pre_promotion_seconds: float = Field(default=0.0, ge=0, le=86400)
    #: How long the old version is kept after the switch for an instant rollback.
    scale_down_delay_seconds: float = Field(default=30.0, ge=0, le=7 * 86400)
    #: The preview's address for ``{preview_url}`` (default: ``http://<router.nginx.canary_server>``,
    #: or the Vercel deployment's ``https://<url>``).
    preview_url: str | None = None

    _url = field_validator("preview_url")(lambda v: v if v is None else _http_url(v).rstrip("/"))


def blue_green_problem(config: ServiceConfig) -> tuple[str, str] | None:
    """``(field, message)`` when ``config`` cannot run a blue-green rollout, else None: the new
    version needs somewhere beside the stable one that takes no traffic until the switch."""
    if config.router.type == "nginx":
        return None  # the provider deploys to canary_server at weight 0; the switch is one write
    if config.provider == "vercel":
        if config.vercel is not None and not config.vercel.promote:
            return "vercel.promote", "strategy blue_green deploys a Vercel preview and promotes it: set true"
        return None
    where = "Render has no preview deployment beside the live one of a service (a deploy replaces it)"
    if config.provider == "webhook":
        where = "a webhook receiver is told weights, not given a preview to switch to"
    return "router.type", f"strategy blue_green needs router: nginx with provider {config.provider}: {where}"


class GitTagOptions(_Strict):
    """Optional annotated tag ``<service>-stable-<version>-<YYYYMMDD>`` on success (off by default)."""

    enabled: bool = False
    repo_path: Path | None = None

    @model_validator(mode="after")
    def _needs_repo(self) -> GitTagOptions:
        if self.enabled and self.repo_path is None:
            raise ValueError("git_tag.enabled needs repo_path")
        return self


class ServiceConfig(_Strict):
    """One deployable service."""

    provider: Literal["render", "vercel", "webhook"]
    webhook: WebhookOptions | None = None
    render: RenderOptions | None = None
    vercel: VercelOptions | None = None
    strategy: Strategy = "direct"
    canary: CanaryOptions = Field(default_factory=CanaryOptions)
    blue_green: BlueGreenOptions = Field(default_factory=BlueGreenOptions)
    gates: GateOptions = Field(default_factory=GateOptions)
    router: RouterOptions = Field(default_factory=RouterOptions)
    git_tag: GitTagOptions = Field(default_factory=GitTagOptions)
    deploy_timeout_seconds: float = Field(default=1800.0, gt=0, le=6 * 3600)
    #: Manual gates: ``before_promotion`` waits (status ``awaiting_confirmation``) before the step
    #: that reaches 100 % (a one-step rollout: after its gates, before the provider's promote and
    #: the stable pointer); ``each_step`` before every step after the first. None: never waits.
    confirm: Literal["before_promotion", "each_step"] | None = None
    #: How long a rollout waits for a confirmation before it is aborted (status ``canceled``).
    confirm_timeout_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _provider_section(self) -> ServiceConfig:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider {self.provider} needs a '{self.provider}' section")
        return self

    @model_validator(mode="after")
    def _blue_green(self) -> ServiceConfig:
        problem = blue_green_problem(self) if self.strategy == "blue_green" else None
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        uses = any(PREVIEW_URL in u for u in self.gates.smoke_urls)
        if uses and self.strategy != "blue_green" and self.router.type != "nginx":
            raise ValueError(f"gates.smoke_urls: {PREVIEW_URL} needs strategy blue_green or router: nginx")
        return self

    def steps(self, strategy: str | None = None) -> list[int]:
        """Traffic steps of a rollout with ``strategy`` (default: the service's)."""
        return list(self.canary.steps) if (strategy or self.strategy) == "canary" else [100]


class ServicesFile(_Strict):
    """The whole file: ``services: {name: ServiceConfig}``."""

    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _names(cls, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        import re

        for name in services:
            if not re.match(SERVICE_NAME, name):
                raise ValueError(f"service name {name!r} must match {SERVICE_NAME}")
        return services


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    msg = first["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "services":
        named = re.match(r"^[a-z_][a-z_.]*: ", msg) if len(loc) == 2 else None  # a check across fields
        field = ".".join(loc[2:]) or ("" if named else "(service)")
        if not field:
            return f"service {loc[1]!r}: {msg}"
        return f"service {loc[1]!r}: {field}: {msg}"
    return f"{'.'.join(loc) or '(file)'}: {msg}"


def load_services(path: Path) -> ServicesFile:
    """Read and validate a services file; ConfigError with one line naming service and field."""
    where = f"OPSDECK_SERVICES={path}"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{where}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping with a 'services' key")
    try:
        return ServicesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
