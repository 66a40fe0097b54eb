"""Saved views of the tasks page: named filter URLs kept per user in Redis (one hash per user,
``Keys.saved_views``: name → the filter's query string). A view is only ever a query of
``/tasks`` rebuilt from the filter fields it may hold, so a saved view cannot point elsewhere.

JSON: ``GET /api/views``, ``POST /api/views {name, query}``, ``DELETE /api/views/{name}``.
The tasks page uses the form routes ``POST /tasks/views`` and ``POST /tasks/views/delete``
(CSRF token in the form), which answer with a redirect back to the page."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dashboard.appkeys import KEYS, REDIS, USER
from dashboard.auth import User
from shared.errors import Conflict, NotFound, ValidationFailed, pydantic_fields
from shared.web import json_response, read_json

#: Views one user may keep.
MAX_VIEWS = 50
#: The tasks page's filter fields a view keeps (never the cursor: a view is a search, not a page).
VIEW_FIELDS = ("type", "status", "priority", "since", "until", "error", "limit")
#: Longest stored query string.
MAX_QUERY = 1000


class SavedView(BaseModel):
    """Body of ``POST /api/views``: a name and the tasks page's filter query."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
    query: str = Field(max_length=MAX_QUERY, description="The filter query of /tasks, e.g. status=failed")


def clean_query(query: str) -> str:
    """``query`` (with or without a leading ``/tasks?`` or ``?``) reduced to the filter fields a
    view keeps, empty values dropped, in a fixed order."""
    query = query.strip()
    for lead in ("/tasks?", "?"):
        if query.startswith(lead):
            query = query[len(lead) :]
    pairs = dict(parse_qsl(query, keep_blank_values=False))
    return urlencode([(k, pairs[k]) for k in VIEW_FIELDS if pairs.get(k)])


def _user(request: web.Request) -> User:
    user: User = request[USER]
    return user


async def list_views(request: web.Request) -> list[dict[str, str]]:
    """The caller's views by name: ``{name, query, url}``."""
    raw = await request.app[REDIS].hgetall(request.app[KEYS].saved_views(_user(request).subject))
    views = sorted((k.decode(), v.decode()) for k, v in raw.items())
    return [{"name": n, "query": q, "url": f"/tasks?{q}" if q else "/tasks"} for n, q in views]


async def save_view(request: web.Request, name: str, query: str) -> dict[str, str]:
    """Store (or replace) the caller's view ``name``; Conflict beyond MAX_VIEWS."""
    client, key = request.app[REDIS], request.app[KEYS].saved_views(_user(request).subject)
    cleaned = clean_query(query)
    name = name.strip()
    if not name:
        raise ValidationFailed("a view needs a name", fields=[{"loc": ["body", "name"], "msg": "empty"}])
    if not await client.hexists(key, name) and await client.hlen(key) >= MAX_VIEWS:
        raise Conflict(f"{MAX_VIEWS} views saved already; delete one first")
    await client.hset(key, name, cleaned)
    return {"name": name, "query": cleaned, "url": f"/tasks?{cleaned}" if cleaned else "/tasks"}


async def delete_view(request: web.Request, name: str) -> None:
    """Delete the caller's view ``name``; NotFound when there is none."""
    key = request.app[KEYS].saved_views(_user(request).subject)
    if not await request.app[REDIS].hdel(key, name):
        raise NotFound(f"no saved view named {name!r}")


# -- JSON API ----------------------------------------------------------------------------------
async def views_get(request: web.Request) -> web.Response:
    """``GET /api/views``: the caller's saved views."""
    return json_response({"views": await list_views(request)})


async def views_post(request: web.Request) -> web.Response:
    """``POST /api/views {name, query}``: save (or replace) a view → 201."""
    body = await read_json(request, SavedView)
    return json_response(await save_view(request, body.name, body.query), status=201)


async def views_delete(request: web.Request) -> web.Response:
    """``DELETE /api/views/{name}``: delete a view."""
    await delete_view(request, request.match_info["name"])
    return json_response({"deleted": request.match_info["name"]})


# -- the tasks page's forms --------------------------------------------------------------------
async def _form(request: web.Request) -> dict[str, Any]:
    form = await request.post()
    return {k: str(v) for k, v in form.items() if k != "csrf_token"}


async def form_save(request: web.Request) -> web.Response:
    """``POST /tasks/views`` (form: name, query): save, then back to the view."""
    form = await _form(request)
    try:
        body = SavedView.model_validate({"name": form.get("name", ""), "query": form.get("query", "")})
    except ValidationError as exc:
        raise ValidationFailed("the view is invalid", fields=pydantic_fields(exc, "form")) from None
    view = await save_view(request, body.name, body.query)
    raise web.HTTPSeeOther(f"{view['url']}{'&' if '?' in view['url'] else '?'}saved={quote(view['name'])}")


async def form_delete(request: web.Request) -> web.Response:
    """``POST /tasks/views/delete`` (form: name): delete, then back to the tasks page."""
    form = await _form(request)
    await delete_view(request, form.get("name", ""))
    raise web.HTTPSeeOther("/tasks")
