"""One chat turn (features → select → generate → guard → store) and one rating, as the actors run them.

**A turn** is the record :class:`~shared.turns.TurnStore` owns (expires after TASK_TTL).
The first task to handle a turn claims it. ``select`` then lets the shared LinUCB decide in one
round trip that also stores the decision with the turn; ``store`` adds the suggestion. A
redelivered task (same id) finds its own claim: it reuses a stored decision instead of deciding
again (the pull counts once) and returns a stored suggestion as is, so the task is idempotent.
Another task for a turn already claimed fails with :class:`TurnTaken` (never retried).

**A rating** reads the arm and context stored with the turn — never values from the client — and
applies ``(rating − 1) / 4`` once per ``session_id:turn_number`` (the update script's rated set
makes a repeat or a redelivery a no-op). A turn that was handed out but not answered yet raises
:class:`TurnPending` (retried with backoff); a turn never handed out raises :class:`UnknownTurn`.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import redis

from shared import tracing
from shared.coaching import CoachPayload, FeedbackPayload, rating_key
from shared.llm_tiers import turn_draw
from shared.settings import Settings
from shared.turns import TurnState, TurnStore
from worker.bandit.features import features
from worker.bandit.linucb import reward_from_rating
from worker.bandit.redis_state import RedisLinUCB
from worker.coach import metrics
from worker.coach.engine import BuiltinEngine, Suggestion
from worker.coach.llm import GuardedLLM, OpenAIClient, RedisTierReport
from worker.coach.playbook import playbook_for

#: Longest suggestion the guard lets through (longer ones are cut at a word boundary).
MAX_SUGGESTION_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class CoachingError(Exception):
    """An error retrying cannot fix (the actors list it in ``throws``)."""


class TurnTaken(CoachingError):
    """Another task already answers this turn."""


class UnknownTurn(CoachingError):
    """A rating for a turn that was never handed out (or has expired)."""


class TurnPending(Exception):
    """A rating for a turn whose suggestion is not ready yet (retried with backoff)."""


@contextmanager
def node(name: str) -> Iterator[None]:
    """Time one pipeline node into the node histogram and count it as ok or error, inside a
    span ``coach <name>`` when the attempt is traced."""
    started = time.perf_counter()
    status = "error"
    try:
        with tracing.span(f"coach {name}"):
            yield
        status = "ok"
    finally:
        metrics.NODE_DURATION.labels(name).observe(time.perf_counter() - started)
        metrics.NODE_TOTAL.labels(name, status).inc()


def build_llm(settings: Settings, client: redis.Redis | None = None) -> GuardedLLM | None:
    """The guarded LLM when ``LLM_BASE_URL`` is set, else None (built-in engine only); with a
    ``client`` each call's tier state is reported into Redis (``Keys.llm_tiers``)."""
    if not settings.llm_base_url:
        return None
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    llm_client = OpenAIClient(settings.llm_base_url, key, settings.llm_timeout)
    report = None
    if client is not None:
        worker = f"{settings.worker_id}/{os.getpid()}"
        report = RedisTierReport(client, settings.keys, worker, window=settings.llm_health_window)
    return GuardedLLM(llm_client, settings.llm_models, report=report, weights=settings.tier_weights)


def guard(suggestion: Suggestion, builtin: Suggestion) -> Suggestion:
    """Clean the final text (control characters, whitespace, length); empty → the built-in answer."""
    text = " ".join(_CONTROL.sub(" ", suggestion.text).split())
    if len(text) > MAX_SUGGESTION_CHARS:
        text = text[: MAX_SUGGESTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    if not text:
        return replace(builtin, source="fallback") if suggestion.source != "builtin" else builtin
    return suggestion if text == suggestion.text else replace(suggestion, text=text)


class CoachPipeline:
    """The coaching work of one worker process (module docstring); thread-safe."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        llm: GuardedLLM | None = None,
        bandit: RedisLinUCB | None = None,
    ) -> None:
        self.client = client
        self.keys = keys = settings.keys
        self.ttl = settings.task_ttl
        self.turns = TurnStore(keys, settings.task_ttl)
        #: The tier of each configured model (an answer's model names the tier that answered).
        self.tier_of = {model: tier for tier, model in settings.llm_models.items() if model}
        self.bandit = bandit or RedisLinUCB(
            client,
            keys=keys,
            alpha=settings.bandit_alpha,
            warmup=settings.bandit_warmup,
            schedule=settings.alpha_schedule,
            checkpoint_every=settings.bandit_checkpoint_every,
            checkpoints_kept=settings.bandit_checkpoints_kept,
            policy=settings.rollback_policy,
        )
        self.engine = BuiltinEngine(playbook_for(settings))
        self.llm = llm if llm is not None else build_llm(settings, client)

    # -- a chat turn -------------------------------------------------------------------------
    def run_turn(self, payload: CoachPayload, task_id: str) -> dict[str, Any]:
        """Answer one turn (idempotent by task id and by turn); the result is the task's result."""
        session_id, turn_number = payload.session_id, payload.turn_number
        claim = self.turns.claim(self.client, session_id, turn_number, task_id)
        if claim.owner != task_id:
            raise TurnTaken(f"turn {turn_number} of session {session_id} belongs to task {claim.owner}")
        if claim.result is not None:  # a redelivery of a turn already answered
            return claim.result

        with node("features"):
            x = features(payload.message, payload.turn_number - 1)
        with node("select"):
            if claim.decision is not None:  # decided before a crash: never count the pull twice
                arm, exploration, propensity = claim.decision
            else:
                decision = self.turns.decide(self.bandit, x, session_id, turn_number)
                arm, exploration, propensity = decision.arm, decision.exploration, decision.propensity
                metrics.DECISIONS.labels(arm, "true" if exploration else "false").inc()
                for name, score in decision.ucb_scores.items():
                    metrics.UCB_SCORE.labels(name).observe(score)
                metrics.PHASE.set(1.0 if propensity == 1.0 else 0.0)
                metrics.ALPHA.set(decision.alpha)
        with node("generate"):
            builtin = self.engine.suggest(
                arm, payload.message, session_id=payload.session_id, turn_number=payload.turn_number
            )
            suggestion = builtin
            if self.llm is not None:
                grounding = self.engine.context(arm, builtin)
                draw = turn_draw(session_id, turn_number)
                suggestion = self.llm.generate(
                    builtin, payload.message, grounding, draw=draw, session_id=session_id
                )
        with node("guard"):
            suggestion = guard(suggestion, builtin)
        metrics.SUGGESTIONS.labels(arm, suggestion.source).inc()
        result = {
            "session_id": payload.session_id,
            "turn_number": payload.turn_number,
            "arm": arm,
            "exploration": exploration,
            "propensity": propensity,
            "suggestion": suggestion.as_dict(),
        }
        with node("store"):
            tier = self.tier_of.get(suggestion.model or "") if suggestion.source == "llm" else None
            self.turns.answer(self.client, session_id, turn_number, result, suggestion.source, tier)
        return result

    # -- a rating ----------------------------------------------------------------------------
    def rate(self, payload: FeedbackPayload) -> dict[str, Any]:
        """Apply a rating once, with the turn's stored arm and context."""
        context = self.turns.rating_context(self.client, payload.session_id, payload.turn_number)
        if context.state is TurnState.PENDING:
            raise TurnPending(f"turn {payload.turn_number} of {payload.session_id} is not answered yet")
        if context.arm is None or context.x is None:
            raise UnknownTurn(f"turn {payload.turn_number} of session {payload.session_id} is unknown")
        arm = context.arm
        x = np.frombuffer(context.x, dtype="<f8").astype(np.float64)
        reward = reward_from_rating(payload.rating)
        key = rating_key(payload.session_id, payload.turn_number)
        applied = self.bandit.update(arm, x, reward, key=key)
        if applied:
            metrics.FEEDBACK.labels(arm).inc()
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.bandit.state_key, [f"{arm}:reward_sum", f"{arm}:updates"])
                self.turns.mark_rated(pipe, payload.session_id, payload.turn_number, payload.rating)
                (rsum, updates), _ = pipe.execute()
            if rsum and updates and int(updates):
                metrics.REWARD.labels(arm).set(struct.unpack("<d", rsum)[0] / int(updates))
        return {"applied": applied, "arm": arm, "reward": reward, "rating_key": key}
