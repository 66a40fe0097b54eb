"""Traffic routers: where a canary step's weight goes.

``none``: the provider cannot split traffic; a canary is a deploy followed by gates at full
traffic. ``nginx``: an ``upstream`` block with the stable and canary servers weighted
``100 - w`` and ``w`` is written atomically to ``config_path``, then ``reload_command`` runs.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Protocol

from shared.deploy.config import NginxOptions, RouterOptions
from worker.deploy.errors import ProviderError

#: Seconds the reload command may take.
RELOAD_TIMEOUT = 30.0


class Router(Protocol):
    """Sends ``weight`` percent of traffic to the new version."""

    def set_weight(self, weight: int) -> None:
        """Apply a weight (0 = all on stable, 100 = all on the new version)."""


class NoRouter:
    """No traffic splitting."""

    def set_weight(self, weight: int) -> None:
        """Nothing to do."""


def upstream_block(options: NginxOptions, weight: int) -> str:
    """The nginx ``upstream`` block for ``weight`` (a server with weight 0 is left out)."""
    lines = [f"# written by opsdeck: {weight}% on the new version", f"upstream {options.upstream} {{"]
    if weight < 100:
        lines.append(f"    server {options.stable_server} weight={100 - weight};")
    if weight > 0:
        lines.append(f"    server {options.canary_server} weight={weight};")
    lines.append("}")
    return "\n".join(lines) + "\n"


class NginxRouter:
    """Weights in an nginx upstream file, applied by a reload command."""

    def __init__(self, options: NginxOptions) -> None:
        self.options = options

    def set_weight(self, weight: int) -> None:
        """Write the upstream file atomically and reload nginx."""
        path = self.options.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(upstream_block(self.options, weight))
        os.replace(tmp, path)
        try:
            done = subprocess.run(
                self.options.reload_command,
                capture_output=True,
                text=True,
                timeout=RELOAD_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderError(f"nginx reload failed: {exc}") from None
        if done.returncode != 0:
            raise ProviderError(f"nginx reload exited {done.returncode}: {done.stderr.strip()[:500]}")


def make_router(options: RouterOptions) -> Router:
    """The router configured for a service."""
    if options.type == "nginx" and options.nginx is not None:
        return NginxRouter(options.nginx)
    return NoRouter()
