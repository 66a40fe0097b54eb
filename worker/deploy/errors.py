"""Errors of the deploy machinery.

DeployError
├── ProviderError          a provider call did not do what was asked
│   ├── ProviderRejected   4xx (auth, validation): never retried, fails the deploy at once
│   └── ProviderUnavailable 429/5xx/timeouts that outlasted the retries (transient)
└── GateFailed             a smoke, error-rate or p99 gate failed
RecordPending              the API's record is not written yet: retried by Dramatiq
"""

from __future__ import annotations


class DeployError(Exception):
    """Root of the deploy machinery's errors."""


class ProviderError(DeployError):
    """A provider call did not do what was asked."""


class ProviderRejected(ProviderError):
    """The provider refused the request (4xx other than 429); retrying will not help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderUnavailable(ProviderError):
    """The provider kept failing transiently (429, 5xx, timeouts) through every retry."""


class GateFailed(DeployError):
    """A gate after a step failed."""


class RecordPending(Exception):
    """The coordinator has not written the deploy record yet (retried, not a failure)."""
