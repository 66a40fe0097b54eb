"""Every Lua script is a ``.lua`` file in a ``lua/`` directory, read by one include-aware reader
(``shared.store.lua_source``), and compiles in Redis; no Python module holds Lua of its own."""

from __future__ import annotations

import re

import pytest

from shared.store import lua_source
from tests.conftest import ROOT

#: The product's top-level packages and scripts.
PRODUCT = ["coordinator", "worker", "dashboard", "shared", "scripts"]
#: Packages with a ``lua/`` directory of scripts.
LUA_PACKAGES = ["shared", "shared.deploy", "shared.transport", "worker.bandit", "worker.coach"]
SCRIPTS = sorted(
    (package, path.stem)
    for package in LUA_PACKAGES
    for path in (ROOT / package.replace(".", "/") / "lua").glob("*.lua")
)


def test_every_lua_directory_is_listed():
    found = {
        ".".join(path.parent.parent.relative_to(ROOT).parts)
        for top in PRODUCT
        for path in (ROOT / top).rglob("*.lua")
    }
    assert found == set(LUA_PACKAGES)  # each in a package's lua/ directory


@pytest.mark.parametrize(("package", "name"), SCRIPTS)
def test_each_script_loads_with_its_includes_and_compiles(package, name, rclient):
    source = lua_source(package, name)
    assert not [line for line in source.splitlines() if line.startswith("--! include ")]
    rclient.script_load(source)  # a syntax error would be a ResponseError here


def test_no_python_module_holds_lua():
    lua = re.compile(r"redis\.p?call\(")
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            assert not lua.search(path.read_text()), f"{path.relative_to(ROOT)} holds Lua"
