"""The optional LLM: an OpenAI-compatible ``/chat/completions`` client behind guards.

:class:`GuardedLLM` turns the built-in suggestion into an LLM one, or returns it as the fallback:

1. **cache** — an LRU + TTL cache (1000 entries, 10 min) keyed by arm, playbook entry and the
   normalised message answers repeats without a call (``source="cache"``);
2. **mix** — the turn is routed to a tier drawn by the traffic shares (``LLM_TIER_WEIGHTS`` over
   the tiers that have a model, :mod:`shared.llm_tiers`) with the turn's reproducible draw;
3. **breakers** — one :class:`~worker.coach.breaker.CircuitBreaker` for the service (every tier
   shares ``LLM_BASE_URL``): while it refuses calls the built-in answer is returned at once
   (``source="fallback"``), while it is half-open its one trial goes to the fastest tier; and one
   per tier: a *degraded* tier (its breaker open) hands its share down to the next tier that
   lets a call through (creative → balanced → fast; the fastest's goes up to the nearest one),
   until its breaker's half-open trial succeeds;
4. **attempts** — up to 3, with exponential backoff + jitter between them (a 429's
   ``Retry-After`` is honoured up to the backoff cap); a timeout, connection error, 429, 5xx, a
   body that is not JSON or JSON that fails :class:`LLMAnswer` is a failure; other 4xx stop at
   once; each retry goes one tier down from the tier that failed (downshift);
5. **guard** — the message goes out only as delimited data and each answer is checked before
   use (:mod:`worker.coach.guard`): one it rejects (echo of the instructions or of another
   session's text, injection output, too long) ends the attempts with the built-in answer
   (outcome ``rejected``);
6. **fallback** — after the last failed attempt the built-in suggestion is the answer.

After each call the optional ``report`` hook gets the tier, the outcome (``ok``, ``error``,
``invalid``, ``rejected``), the failure and the breaker's state (the worse of the service's and the tier's);
:class:`RedisTierReport` writes them into the ``llm_tiers`` hash (shared.keys) where the
coordinator's ``/health`` reads them.

One instance per worker process, shared by its threads (breakers and cache are thread-safe).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import redis
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import tracing
from shared.keys import Keys
from shared.llm_tiers import TIERS, pick, shares
from shared.store import lua_source
from worker.coach import metrics
from worker.coach.breaker import BreakerState, CircuitBreaker
from worker.coach.cache import TTLCache
from worker.coach.engine import Suggestion
from worker.coach.guard import (
    JSON_INSTRUCTION,
    SYSTEM_PROMPTS,
    Prompt,
    RecentMessages,
    build_prompt,
    check_raw,
    check_text,
)

__all__ = ["JSON_INSTRUCTION", "SYSTEM_PROMPTS", "GuardedLLM", "LLMAnswer", "LLMError", "OpenAIClient"]

_TIER_GAUGE = {"creative": 2, "balanced": 1, "fast": 0}
#: The idle-tier probe: as small as a call that still exercises the JSON answer can be.
PROBE_MESSAGES: Final = [
    {"role": "system", "content": 'Health check. Answer with one JSON object only: {"suggestion": "ok"}.'},
    {"role": "user", "content": "ping"},
]


class LLMError(Exception):
    """One failed attempt; ``retryable`` False stops the attempts (e.g. 401)."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class LLMAnswer(BaseModel):
    """The JSON object the model must answer with."""

    model_config = ConfigDict(extra="ignore")

    suggestion: str = Field(min_length=1, max_length=1000)


class OpenAIClient:
    """Minimal synchronous client of an OpenAI-compatible API (stdlib ``http.client``)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("LLM_BASE_URL must be an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.path = f"{parts.path}/chat/completions"
        self.api_key = api_key
        self.timeout = timeout

    def complete(self, model: str, messages: list[dict[str, str]], *, max_tokens: int | None = None) -> str:
        """The first choice's message content; LLMError on any transport or HTTP failure."""
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "response_format": {"type": "json_object"},
            "temperature": 0.3,
        }
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn_cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = conn_cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError as exc:
            raise LLMError(f"timeout after {self.timeout}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise LLMError(f"connection failed: {type(exc).__name__}") from exc
        finally:
            conn.close()
        if resp.status == 429:
            raise LLMError("rate limited (429)", retry_after=_seconds(resp.getheader("Retry-After")))
        if resp.status >= 500:
            raise LLMError(f"server error ({resp.status})")
        if resp.status != 200:
            raise LLMError(f"refused ({resp.status})", retryable=False)
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError("malformed completion body") from exc
        if not isinstance(content, str):
            raise LLMError("completion content is not text")
        return content


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class TierReport(Protocol):
    """``report(tier, outcome, detail, breaker_state, latency=, probe=)`` after each LLM call
    (``latency`` in seconds; ``probe``: an idle-tier probe, not a turn's call)."""

    def __call__(
        self,
        tier: str,
        outcome: str,
        detail: str | None,
        breaker: BreakerState,
        *,
        latency: float | None = None,
        probe: bool = False,
    ) -> None: ...


class RedisTierReport:
    """Write a call into its tier's health record in Redis (``Keys.llm_tiers``, one atomic
    ``llm_report.lua``: outcome, breaker state, last success / failure, p50 / p95 over the tier's
    last ``window`` latencies in ``Keys.llm_latency``); a Redis error is ignored: reporting never
    fails a coaching turn."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: str, *, window: int = 50) -> None:
        self.client = client
        self.keys = keys
        self.key = keys.llm_tiers
        self.worker = worker
        self.window = window
        self.script = client.register_script(lua_source("worker.coach", "llm_report"))

    def __call__(
        self,
        tier: str,
        outcome: str,
        detail: str | None,
        breaker: BreakerState,
        *,
        latency: float | None = None,
        probe: bool = False,
    ) -> None:
        args = [
            tier,
            outcome,
            detail or "",
            breaker.name.lower(),
            int(time.time() * 1000),
            self.worker,
            "" if latency is None else round(latency * 1000, 3),
            self.window,
            "1" if probe else "0",
        ]
        with contextlib.suppress(redis.RedisError):
            self.script(keys=[self.key, self.keys.llm_latency(tier)], args=args)


class GuardedLLM:
    """Cache, breaker, retries, downshift and fallback around an :class:`OpenAIClient` (module doc)."""

    def __init__(
        self,
        client: Any,
        models: Mapping[str, str | None],
        *,
        breaker: CircuitBreaker | None = None,
        cache: TTLCache[Suggestion] | None = None,
        attempts: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        report: TierReport | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.client = client
        self.report = report
        self.tiers = [t for t in TIERS if models.get(t)]
        if not self.tiers:
            raise ValueError("at least one model tier must be configured")
        self.models = {t: str(models[t]) for t in self.tiers}
        #: Traffic share per tier; without ``weights`` the most capable tier takes every turn.
        self.share = shares(weights, self.tiers) if weights is not None else {self.tiers[0]: 1.0}
        if not self.share:
            raise ValueError("no configured tier has a traffic weight")
        self.breaker = breaker or CircuitBreaker()
        self.tier_breakers = {t: self.breaker.like() for t in self.tiers}
        #: Recent messages of every session this process answered (the guard's cross-session check).
        self.recent = RecentMessages()
        self.cache: TTLCache[Suggestion] = cache or TTLCache(1000, 600.0)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep

    def drawn(self, draw: float | None) -> str:
        """The tier the mix assigns to ``draw`` (None: the first tier with a share)."""
        return pick(self.share, 0.0 if draw is None else draw)

    def _order(self, start: str) -> list[str]:
        """``start``, the tiers below it, then the ones above it nearest first."""
        i = self.tiers.index(start)
        return self.tiers[i:] + self.tiers[:i][::-1]

    def tier(self, draw: float | None = None) -> str:
        """The tier a call for ``draw`` goes to now (without taking a half-open trial)."""
        if self.breaker.state is not BreakerState.CLOSED:
            return self.tiers[-1]
        for tier in self._order(self.drawn(draw)):
            if self.tier_breakers[tier].state is not BreakerState.OPEN:
                return tier
        return self.tiers[-1]

    def _route(self, start: str) -> tuple[str, bool] | None:
        """The tier of the next attempt and whether its tier breaker let it through (and so must
        hear the outcome); None when every tier's breaker refuses. Call after the service
        breaker allowed the attempt: while that one is half-open its trial goes to the fastest."""
        if self.breaker.state is not BreakerState.CLOSED:
            return self.tiers[-1], False
        for tier in self._order(start):
            if self.tier_breakers[tier].allow():
                return tier, True
        return None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Backoff before attempt ``attempt + 1``: exponential, jitter: a uniform share in [½, 1] of it."""
        base = min(self.max_backoff, self.backoff * 2.0**attempt) * random.uniform(0.5, 1.0)
        return max(base, min(retry_after, self.max_backoff)) if retry_after else base

    @staticmethod
    def cache_key(builtin: Suggestion, message: str) -> str:
        """Same arm, same playbook entry, same (normalised) message → same cached answer."""
        norm = " ".join(message.lower().split())
        return hashlib.sha256(f"{builtin.arm}\x1f{builtin.entry_id}\x1f{norm}".encode()).hexdigest()

    def generate(
        self,
        builtin: Suggestion,
        message: str,
        grounding: str,
        *,
        draw: float | None = None,
        session_id: str | None = None,
    ) -> Suggestion:
        """The LLM's suggestion, a cached one, or ``builtin`` as the fallback; ``draw`` (in
        [0, 1), shared.llm_tiers.turn_draw) picks the turn's tier by the traffic mix;
        ``session_id`` lets the guard refuse another session's text."""
        if session_id is not None:
            self.recent.remember(session_id, message)
        key = self.cache_key(builtin, message)
        cached = self.cache.get(key)
        trace.get_current_span().set_attribute("opsdeck.llm.cache_hit", cached is not None)
        if cached is not None:
            metrics.LLM_CACHE_HITS.inc()
            return replace(cached, source="cache")
        metrics.LLM_CACHE_MISSES.inc()
        prompt = build_prompt(builtin.arm, grounding, message)
        start = self.drawn(draw)
        for attempt in range(self.attempts):
            if not self.breaker.allow():
                break
            routed = self._route(start)
            if routed is None:
                break
            tier, counted = routed
            if attempt == 0:
                metrics.LLM_TIER_CHOSEN.labels(tier).inc()
            metrics.LLM_TIER.set(_TIER_GAUGE[tier])
            attributes = {"gen_ai.request.model": self.models[tier], "opsdeck.llm.tier": tier,
                          "opsdeck.llm.attempt": attempt + 1}  # fmt: skip
            with tracing.span("llm chat", attributes, kind=tracing.SpanKind.CLIENT) as call:
                found = self._attempt(call, tier, counted, key, builtin, prompt, session_id)
            result, stop, retry_after = found
            if result is not None:
                return result
            if stop:
                break
            start = self.tiers[min(self.tiers.index(tier) + 1, len(self.tiers) - 1)]
            if attempt + 1 < self.attempts:
                self.sleep(self.delay(attempt, retry_after))
        metrics.LLM_BREAKER.set(self.breaker.state)
        return replace(builtin, source="fallback")

    def _attempt(
        self,
        call: Span,
        tier: str,
        counted: bool,
        key: str,
        builtin: Suggestion,
        prompt: Prompt,
        session_id: str | None,
    ) -> tuple[Suggestion | None, bool, float | None]:
        """One call to ``tier``'s model (``call``: its span): ``(suggestion, False, None)``, or
        ``(None, stop, retry_after)`` when it failed or the guard rejected it (``stop``: no point
        in another attempt; ``retry_after``: the server's ask, if any); ``counted``: the tier's
        breaker hears it too."""
        started = time.perf_counter()
        try:
            raw = self.client.complete(self.models[tier], prompt.messages)
            latency = time.perf_counter() - started
            rejected = check_raw(raw)
            if rejected is None:
                text = LLMAnswer.model_validate_json(raw).suggestion.strip()
                rejected = check_text(text, prompt, recent=self.recent, session_id=session_id)
        except (LLMError, ValidationError) as exc:
            latency = time.perf_counter() - started
            outcome = "invalid" if isinstance(exc, ValidationError) else "error"
            detail = str(exc) if outcome == "error" else "answer failed validation"
            self._outcome(call, tier, counted, outcome, detail, latency)
            tracing.record_error(call, exc)
            if isinstance(exc, LLMError):
                return None, not exc.retryable, exc.retry_after
            return None, False, None
        if rejected is not None:  # the model answered (no breaker failure), but not usably
            metrics.LLM_GUARD_REJECTIONS.labels(rejected).inc()
            self._outcome(call, tier, counted, "rejected", rejected, latency)
            return None, True, None
        self._outcome(call, tier, counted, "ok", None, latency)
        result = replace(builtin, text=text, source="llm", model=self.models[tier])
        self.cache.put(key, result)
        return result, False, None

    def _outcome(
        self, call: Span, tier: str, counted: bool, outcome: str, detail: str | None, latency: float
    ) -> None:
        """Breakers, metrics, span and report of one attempt's ``outcome``."""
        state = self._record(tier, counted, outcome in ("ok", "rejected"))
        metrics.LLM_BREAKER.set(self.breaker.state)
        metrics.LLM_REQUESTS.labels(tier, outcome).inc()
        call.set_attribute("opsdeck.llm.outcome", outcome)
        if self.report is not None:
            self.report(tier, outcome, detail, state, latency=latency)

    def _record(self, tier: str, counted: bool, success: bool) -> BreakerState:
        """Tell the service's breaker (and the tier's, when it let the call through) the outcome;
        the worse of the two states after it."""
        state = self.breaker.record(success)
        if counted:
            tier_state = self.tier_breakers[tier].record(success)
            metrics.LLM_TIER_BREAKER.labels(tier).set(tier_state)
            state = max(state, tier_state)
        return state

    def probe(self, tier: str) -> str:
        """One tiny call to ``tier``'s model (an idle-tier health probe): its outcome (``ok``,
        ``error``, ``invalid``) and latency go to ``report``; no breaker, cache or metric of the
        turns is touched (a probe is not traffic)."""
        started = time.perf_counter()
        outcome, detail = "ok", None
        try:
            LLMAnswer.model_validate_json(
                self.client.complete(self.models[tier], PROBE_MESSAGES, max_tokens=16)
            )
        except LLMError as exc:
            outcome, detail = "error", str(exc)
        except ValidationError:
            outcome, detail = "invalid", "answer failed validation"
        latency = time.perf_counter() - started
        metrics.LLM_PROBES.labels(tier, outcome).inc()
        if self.report is not None:
            state = max(self.breaker.state, self.tier_breakers[tier].state)
            self.report(tier, outcome, detail, state, latency=latency, probe=True)
        return outcome
