"""Project layout rules: dependency direction between packages, and key names in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = {"coordinator", "worker", "dashboard"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_shared_imports_none_of_the_apps_and_apps_do_not_import_each_other():
    for package in ["shared", *APPS]:
        allowed = {package, "shared"}
        for path in (ROOT / package).rglob("*.py"):
            bad = (imports_of(path) & (APPS | {"shared"})) - allowed
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_redis_key_literals_live_only_in_shared_keys():
    pattern = re.compile(r"""["']opsdeck:[A-Za-z{_]""")
    for package in ["shared", *APPS]:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "shared" / "keys.py":
                continue
            assert not pattern.search(path.read_text()), f"{path.relative_to(ROOT)} spells a key"


def test_top_level_layout():
    names = ["coordinator", "worker", "dashboard", "shared", "tests", "scripts", "Procfile", "render.yaml",
             "README.md", "pyproject.toml", "Makefile", ".ci/run", "CHANGELOG.md"]  # fmt: skip
    for name in names:
        assert (ROOT / name).exists(), name
