"""The provider interface every deploy target implements, and the factory that picks one.

A provider starts a deployment of a version, reports its state, and rolls back to a stable
deployment. Providers that split traffic themselves (``per_step``) are called at every canary
step with the weight; the others are called once, at the first step, and the traffic router
moves the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.deploy.config import ServiceConfig
from shared.settings import Settings
from worker.deploy.errors import ProviderRejected
from worker.deploy.http import RetryPolicy


@dataclass(frozen=True, slots=True)
class StepContext:
    """What one provider call is about."""

    deploy_id: str
    service: str
    version: str | None
    step: int
    weight: int


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A deployment's state as the provider reports it."""

    state: Literal["pending", "live", "failed"]
    message: str = ""
    version: str | None = None
    #: The deployment's own address, where the provider gives one (a Vercel preview's URL).
    url: str | None = None


class Provider(Protocol):
    """trigger → status (poll until live or failed) → promote; rollback to a stable deployment;
    find: a deployment an interrupted trigger started (adopted instead of triggering again)."""

    #: True when the provider receives every step's weight and splits traffic itself.
    per_step: bool

    def trigger(self, ctx: StepContext) -> str:
        """Start a deployment (or move to ``ctx.weight``); returns the provider's deployment id."""

    def find(self, ctx: StepContext, since_ms: int) -> str | None:
        """The id of a deployment a :meth:`trigger` of ``ctx`` started at or after ``since_ms``
        (epoch ms, the worker's clock) whose answer was lost (worker killed), or None."""

    def status(self, ctx: StepContext, provider_id: str) -> ProviderStatus:
        """The state of a deployment started by :meth:`trigger`."""

    def promote(self, ctx: StepContext, provider_id: str) -> None:
        """Make a successful deployment the production one (where that is a separate action)."""

    def rollback(self, ctx: StepContext, stable: dict[str, Any] | None) -> str | None:
        """Return traffic to the stable deployment; a provider id to poll, or None."""

    def restore(self, ctx: StepContext, target: dict[str, Any]) -> str | None:
        """Serve an earlier deployment again (``target``: ``provider_deploy_id``, ``version``), from
        the provider's own history (``opsdeck deploy rollback``); a provider id to poll, or None."""


def secret(name: str) -> str:
    """The value of the environment variable ``name``; ProviderRejected when unset."""
    value = os.environ.get(name, "")
    if not value:
        raise ProviderRejected(f"environment variable {name} is not set")
    return value


def retry_policy(settings: Settings, timeout: float | None = None) -> RetryPolicy:
    """The HTTP retry policy from settings."""
    return RetryPolicy(
        retries=settings.deploy_http_retries,
        backoff=settings.deploy_http_backoff,
        timeout=timeout or settings.deploy_http_timeout,
    )


def make_provider(config: ServiceConfig, settings: Settings) -> Provider:
    """The provider configured for a service."""
    if config.provider == "render" and config.render is not None:
        from worker.deploy.render import RenderProvider

        return RenderProvider(config.render, settings)
    if config.provider == "vercel" and config.vercel is not None:
        from worker.deploy.vercel import VercelProvider

        return VercelProvider(config.vercel, settings)
    if config.provider == "webhook" and config.webhook is not None:
        from worker.deploy.webhook import WebhookProvider

        return WebhookProvider(config.webhook, settings)
    raise ProviderRejected(f"provider {config.provider} is not configured")
