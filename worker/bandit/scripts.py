"""The bandit's Lua scripts (``worker/bandit/lua/``): only the worker runs them.

The coordinator never calls them; ``shared.turns.TurnStore`` names the fields ``bandit_decide.lua``
writes into a chat turn. Loaded like every Opsdeck script, by :func:`shared.store.lua_source`.
"""

from __future__ import annotations

from shared.store import lua_source


def script_source(name: str) -> str:
    """The text of ``worker/bandit/lua/<name>.lua``, with its ``--! include`` lines inlined."""
    return lua_source("worker.bandit", name)
