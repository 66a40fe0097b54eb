"""Project layout rules: dependency direction between packages, key names in one module, shared/ holding
only what two apps use, and the tooling (shared/devtools/) imported by no app."""

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


# -- shared/ holds only contracts of two rooms; the tooling sits apart -------------------------------
#: The tooling sub-package: the CLI, dev launcher, embedded Redis, load harness, readiness analysis
#: and deploy client. No app imports it, and its imports give a shared module no room.
DEVTOOLS = "shared.devtools"
#: Sub-packages counted as one contract: a room that imports the package or any of its modules uses
#: all of it. ``shared.transport`` is one interface (enqueue, queue stats, purge, dead letters,
#: maintenance, the consumer) whose modules are its one implementation: the dashboard calls the
#: queue part, the worker the broker and maintenance, and a second broker replaces them together.
#: ``shared.deploy`` is not listed: each of its modules (models, store, actions, config)
#: must have two rooms of its own; its ``__init__`` counts with every module of the package.
PACKAGE_UNITS = ("shared.transport",)
#: Shared modules whose second user is the tooling, which may not import an app: the worker's
#: supervisor and the dev launcher / load stack / embedded Redis spawn children the same way.
SHARED_WITH_TOOLING = {"shared.procutil"}


def module_name(path: Path) -> str:
    """``shared/deploy/store.py`` -> ``shared.deploy.store``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every dotted name ``path`` imports (``from a import b`` gives ``a`` and ``a.b``; relative
    imports resolved)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def unit_of(module: str) -> str:
    """The unit a shared module is counted in: its package unit, else itself."""
    for unit in PACKAGE_UNITS:
        if module == unit or module.startswith(unit + "."):
            return unit
    if module.endswith(".__init__"):
        return module.removesuffix(".__init__")
    return module


def is_devtools(module: str) -> bool:
    return module == DEVTOOLS or module.startswith(DEVTOOLS + ".")


def shared_rooms() -> dict[str, set[str]]:
    """Each unit of ``shared/`` (tooling and the root package excepted) and the apps that use it:
    directly, or through the shared units that import it (transitively)."""
    modules = {module_name(p) for p in (ROOT / "shared").rglob("*.py")}
    units = {unit_of(m) for m in modules if not is_devtools(m) and m != "shared"}

    def touched(name: str) -> set[str]:
        """The units an import of ``name`` runs: the module and the packages above it."""
        parts = name.split(".")
        found = {unit_of(".".join(parts[:i])) for i in range(2, len(parts) + 1)}
        return found & units

    rooms: dict[str, set[str]] = {u: set() for u in units}
    importers: dict[str, set[str]] = {u: set() for u in units}  # unit -> shared units importing it
    for top in ["shared", *APPS]:
        for path in (ROOT / top).rglob("*.py"):
            me = module_name(path)
            if is_devtools(me):
                continue
            for used in set().union(*map(touched, imported_modules(path))) - {unit_of(me)}:
                if top in APPS:
                    rooms[used].add(top)
                elif unit_of(me) in units:
                    importers[used].add(unit_of(me))
    # modules imported by other shared modules count the rooms of those importers
    changed = True
    while changed:
        changed = False
        for unit, via in importers.items():
            inherited = set().union(*(rooms[v] for v in via)) - rooms[unit]
            if inherited:
                rooms[unit] |= inherited
                changed = True
    return rooms


def test_every_shared_module_has_at_least_two_rooms():
    rooms = shared_rooms()
    lonely = {u: sorted(r) for u, r in rooms.items() if len(r) < 2 and u not in SHARED_WITH_TOOLING}
    assert not lonely, f"shared modules with fewer than two of {sorted(APPS)} (move them to it): {lonely}"


def test_the_tooling_exceptions_are_still_needed():
    rooms = shared_rooms()
    tooling = list((ROOT / "shared" / "devtools").rglob("*.py"))
    used_by_tooling = set().union(*map(imported_modules, tooling))
    for module in SHARED_WITH_TOOLING:
        assert len(rooms[module]) == 1, f"{module} has {sorted(rooms[module])}: drop the exception"
        assert module in used_by_tooling, f"{module}: no tooling imports it, move it to its room"


def test_no_app_imports_the_tooling():
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            bad = {name for name in imported_modules(path) if is_devtools(name)}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
