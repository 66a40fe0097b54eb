"""Inputs that used to break the edges of both web apps (issue 14 item 8): validly signed tokens
with malformed claims (500 → 401 with the error shape) and requests aiohttp's parser refuses
(oversize headers, an oversize request line: plain-text 400 → the JSON error shape)."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from coordinator.app import create_app as coordinator_app
from dashboard.app import create_app as dashboard_app
from tests.conftest import SECRET

#: (app factory, a route that needs a token with the scope given)
APPS = {
    "coordinator": (coordinator_app, "/api/v1/tasks", "tasks:read"),
    "dashboard": (dashboard_app, "/api/tasks", "viewer"),
}
_FAR = 2**31  # a valid expiry (2038)

#: Claims whose signature is good and whose content is not: each must be a 401.
MALFORMED: dict[str, dict[str, Any]] = {
    "scope null": {"scope": None},
    "scope int": {"scope": 5},
    "scope nested list": {"scope": [["tasks:read", "viewer"]]},
    "scope object": {"scope": {"tasks:read": True}},
    "scope list of ints": {"scope": [1, 2]},
    "scope bool": {"scope": True},
    "exp 10**400": {"exp": 10**400},
    "exp infinity": {"exp": float("inf")},
    "exp -10**400": {"exp": -(10**400)},
    "exp string": {"exp": "tomorrow"},
    "exp list": {"exp": [_FAR]},
    "sub int": {"sub": 5},
    "sub null": {"sub": None},
    "sub list": {"sub": ["alice"]},
    "sub empty": {"sub": ""},
    "iat string": {"iat": "now"},
    "nbf 10**400": {"nbf": 10**400},
}


def _token(scope: str, override: dict[str, Any] | None = None) -> str:
    claims: dict[str, Any] = {"sub": "alice", "iat": 1, "exp": _FAR, "scope": scope}
    claims.update(override or {})
    return jwt.encode(claims, SECRET.encode(), algorithm="HS256")


def _is_error_shape(body: Any, code: str) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and error.get("code") == code
        and isinstance(error.get("message"), str)
        and isinstance(error.get("fields"), list)
    )


@pytest.mark.parametrize("app_name", sorted(APPS))
async def test_validly_signed_tokens_with_malformed_claims_are_401(aiohttp_client, settings, app_name):
    factory, path, scope = APPS[app_name]
    client = await aiohttp_client(factory(settings))
    answers = {}
    for case, claims in MALFORMED.items():
        resp = await client.get(path, headers={"Authorization": f"Bearer {_token(scope, claims)}"})
        answers[case] = (resp.status, resp.content_type, await resp.text())
    wrong = {case: answer for case, answer in answers.items() if answer[0] != 401}
    assert not wrong, wrong
    for case, (_, content_type, text) in answers.items():
        assert content_type == "application/json", case
        assert _is_error_shape(json.loads(text), "unauthorized"), (case, text)
    # a good token still works afterwards (nothing bad was cached)
    good = await client.get(path, headers={"Authorization": f"Bearer {_token(scope)}"})
    assert good.status == 200, await good.text()


@pytest.mark.parametrize("app_name", sorted(APPS))
@pytest.mark.parametrize(
    ("what", "request_kwargs"),
    [
        ("header value beyond 8190 bytes", {"headers": {"X-Big": "a" * 9000}}),
        ("many headers adding up", {"headers": {f"X-H{i}": "b" * 100 for i in range(200)}}),
        ("request line beyond 8190 bytes", {"params": {"q": "c" * 9000}}),
    ],
)
async def test_requests_the_parser_refuses_answer_in_the_json_error_shape(
    aiohttp_client, settings, app_name, what, request_kwargs
):
    factory, path, _ = APPS[app_name]
    client = await aiohttp_client(factory(settings))
    resp = await client.get(path, **request_kwargs)
    assert resp.status == 400, what
    assert resp.content_type == "application/json", (what, await resp.text())
    body = await resp.json()
    assert _is_error_shape(body, "bad_request"), body
    assert body["error"]["message"]
    # the connection is closed after such an answer; a fresh request is served as usual
    assert (await client.get("/health/live")).status == 200
