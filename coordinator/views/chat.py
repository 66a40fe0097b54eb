"""Coaching endpoints: ``POST /api/v1/chat``, ``GET /ws/chat``, ``POST /api/v1/feedback/submit``,
``GET /api/v1/bandit``, ``POST /api/v1/bandit/rollback``.

Scopes reuse the task scopes, because these endpoints are task submissions and reads in another
form: chat and feedback enqueue ``coach`` / ``feedback`` tasks (``tasks:write``, which also lets
the caller read the answer to its own turn); the bandit view is a read (``tasks:read``); a
manual rollback of the shared model is an operator's act (``admin``).

A chat turn gets its number from one ``INCR`` of the session's counter, then the coach task is
enqueued at P1 in the ``coach`` queue group. ``?wait=S`` parks the request on the process's one
:class:`~coordinator.waiter.TaskWaiter` (no polling) and answers 200 with the suggestion when the
task ends within S seconds, else 202. The WebSocket does the same per message and pushes the
suggestion when it is ready.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from coordinator.appkeys import LIMITER, PRINCIPAL, RATE_METRICS, REDIS, SETTINGS, STORE
from coordinator.http import (
    MAX_BODY_BYTES,
    correlation_id,
    json_response,
    parse_query,
    pydantic_fields,
    read_json,
    redis_deadline,
)
from coordinator.schemas import BanditRollbackRequest, ChatQuery, ChatRequest
from coordinator.views.tasks import status_url
from coordinator.waiter import WAITER
from shared.aio import cancel_and_wait
from shared.bandit_checkpoints import manual_rollback
from shared.coaching import CHAT_PRIORITY, COACH, FEEDBACK, FEEDBACK_PRIORITY, FeedbackPayload, bandit_summary
from shared.errors import Conflict, NotFound, OpsdeckError
from shared.jsondepth import check_depth
from shared.ratelimit import RateLimited
from shared.tasks import TaskStatus
from shared.turns import TurnState, TurnStore
from shared.web import redis_refusal

#: How long a WebSocket turn waits for its suggestion before the socket says "pending".
WS_WAIT_SECONDS = 30.0


def turns_of(app: web.Application) -> TurnStore:
    """The chat turn store of this app (its key names and TASK_TTL)."""
    return TurnStore(app[STORE].keys, app[SETTINGS].task_ttl)


async def submit_turn(app: web.Application, body: ChatRequest, subject: str, cid: str) -> dict[str, Any]:
    """Number the turn and enqueue its coach task; the 202 body."""
    store = app[STORE]
    async with asyncio.timeout(app[SETTINGS].redis_timeout + 0.4):
        turn = await turns_of(app).number(app[REDIS], body.session_id)
    payload = {**body.model_dump(), "turn_number": turn}
    submitted = await store.submit(COACH, payload, CHAT_PRIORITY, subject=subject, correlation_id=cid)
    return {
        "id": submitted.task_id,
        "status": TaskStatus.QUEUED.value,
        "status_url": status_url(submitted.task_id),
        "session_id": body.session_id,
        "turn_number": turn,
    }


async def answer(app: web.Application, accepted: dict[str, Any], wait: float) -> dict[str, Any] | None:
    """The 200 body once the turn's task ends within ``wait`` seconds, else None."""
    status = await app[WAITER].wait(accepted["id"], wait)
    if status is None:
        return None
    record = await app[STORE].get(accepted["id"])
    raw = record.get("result")
    result: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        **accepted,
        "status": status,
        "arm": result.get("arm"),
        "exploration": result.get("exploration"),
        "propensity": result.get("propensity"),
        "suggestion": result.get("suggestion"),
        "error": record.get("error"),
    }


async def chat(request: web.Request) -> web.Response:
    """Enqueue a chat turn (202), or answer with its suggestion when it is ready within ``wait`` (200)."""
    principal = request[PRINCIPAL]
    query = parse_query(request, ChatQuery)
    body = await read_json(request, ChatRequest)
    accepted = await submit_turn(request.app, body, principal.subject, correlation_id(request))
    headers = {"Location": accepted["status_url"]}
    if query.wait > 0 and (done := await answer(request.app, accepted, query.wait)) is not None:
        return json_response(done, status=200, headers=headers)
    return json_response(accepted, status=202, headers=headers)


async def submit_feedback(request: web.Request) -> web.Response:
    """Enqueue a rating of an answered turn (202); 404 for a turn never handed out, 409 while unanswered."""
    principal = request[PRINCIPAL]
    body = await read_json(request, FeedbackPayload)
    store = request.app[STORE]
    async with redis_deadline(request):
        state = await turns_of(request.app).state(request.app[REDIS], body.session_id, body.turn_number)
    if state is not TurnState.DECIDED:
        turn = f"turn {body.turn_number} of session {body.session_id}"
        loc = [{"loc": ["body", "turn_number"], "msg": "unknown turn"}]
        if state is TurnState.PENDING:
            raise Conflict(f"{turn} has no suggestion yet; rate it once it is answered", fields=loc)
        raise NotFound(f"{turn} is unknown (or expired)", fields=loc)
    submitted = await store.submit(
        FEEDBACK,
        body.model_dump(),
        FEEDBACK_PRIORITY,
        subject=principal.subject,
        correlation_id=correlation_id(request),
    )
    url = status_url(submitted.task_id)
    return json_response(
        {"id": submitted.task_id, "status": TaskStatus.QUEUED.value, "status_url": url},
        status=202,
        headers={"Location": url},
    )


async def bandit(request: web.Request) -> web.Response:
    """Phase, alpha and per-arm pulls / updates / mean reward of the shared bandit."""
    settings = request.app[SETTINGS]
    async with redis_deadline(request):
        summary = await bandit_summary(
            request.app[REDIS],
            request.app[STORE].keys,
            alpha=settings.bandit_alpha,
            warmup=settings.bandit_warmup,
            schedule=settings.alpha_schedule,
        )
    return json_response(summary)


async def bandit_rollback(request: web.Request) -> web.Response:
    """Roll the shared bandit back to a kept checkpoint (manual; 404 for one not kept)."""
    body = await read_json(request, BanditRollbackRequest)
    async with redis_deadline(request):
        record = await manual_rollback(
            request.app[REDIS], request.app[STORE].keys, body.checkpoint, request[PRINCIPAL].subject
        )
    if record is None:
        raise NotFound(
            f"checkpoint {body.checkpoint} is not kept (GET /api/v1/bandit lists them)",
            fields=[{"loc": ["body", "checkpoint"], "msg": "unknown checkpoint"}],
        )
    return json_response(record)


# -- WebSocket ---------------------------------------------------------------------------------
def _error(code: str, message: str, fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message, "fields": fields or []}}


async def ws_chat(request: web.Request) -> web.StreamResponse:
    """Interactive chat: send ``{session_id, message, user_id}``, get ``accepted`` then ``suggestion``."""
    principal = request[PRINCIPAL]  # the token may come as ?token= (coordinator.http.websocket_guard)
    app = request.app
    limiter = app[LIMITER] if app[LIMITER].enabled("chat") else None
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY_BYTES)
    await ws.prepare(request)
    pushes: set[asyncio.Task[None]] = set()

    async def push(accepted: dict[str, Any]) -> None:
        done = await answer(request.app, accepted, WS_WAIT_SECONDS)
        if not ws.closed:
            kind = "suggestion" if done is not None else "pending"
            await ws.send_json({"type": kind, **(done or accepted)}, dumps=lambda d: orjson.dumps(d).decode())

    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                check_depth(msg.data)  # a 422-like error naming the field, before pydantic
                body = ChatRequest.model_validate_json(msg.data)
                if limiter is not None:  # each message takes a token of the subject's chat bucket
                    async with asyncio.timeout(app[SETTINGS].redis_timeout + 0.4):
                        await limiter.check(principal.subject, "chat")
                accepted = await submit_turn(request.app, body, principal.subject, correlation_id(request))
            except ValidationError as exc:
                await ws.send_json(
                    _error("validation_error", "message is invalid", pydantic_fields(exc, "body"))
                )
                continue
            except OpsdeckError as exc:
                frame = _error(exc.code, exc.message, exc.fields)
                if isinstance(exc, RateLimited):  # as the edge answers 429: the wait, counted
                    frame["retry_after"] = exc.retry_after
                    app[RATE_METRICS].count(exc.route_class)
                await ws.send_json(frame)
                continue
            except Exception as exc:  # a Redis failure is answered on the socket, as the edge would
                refusal = redis_refusal(exc)
                if refusal is None:
                    raise
                await ws.send_json(_error(refusal.code, refusal.message))
                continue
            await ws.send_json({"type": "accepted", **accepted})
            task = asyncio.create_task(push(accepted))
            pushes.add(task)
            task.add_done_callback(pushes.discard)
    finally:
        await cancel_and_wait(pushes)
    return ws
