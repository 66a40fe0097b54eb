"""requirements.lock is the whole resolved set, with hashes, and it is what this environment runs:
every distribution of the project's closure (its dependencies and the dev extra, transitively,
plus the build backend and pip) is in the lock and installed at exactly the locked version.

Offline and fast: reads the lock, pyproject.toml and the installed distributions' metadata. A
failure means the lock lags pyproject.toml (run `make lock`) or the environment was not installed
from the lock (run `make install`)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
NEVER = {"torch", "torchvision", "tensorflow"}  # nothing here needs them; a lock that grew one is a mistake


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) for every pin of the lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in LOCK.read_text().splitlines():
        if match := PIN.match(line):
            current = []
            pins[canonicalize_name(match[1])] = (match[2], current)
        elif (stripped := line.strip()).startswith("--hash=sha256:"):
            current.append(stripped.removeprefix("--hash=sha256:").rstrip(" \\"))
    return pins


def _direct() -> list[Requirement]:
    """What pyproject.toml asks for: dependencies, the dev extra, the build backend, and pip."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["dev"],
        *pyproject["build-system"]["requires"],
        "pip",
    ]
    return [Requirement(r) for r in names]


def _closure(roots: list[Requirement]) -> set[str]:
    """Canonical names of the distributions ``roots`` need, transitively, with markers and extras
    evaluated for this interpreter (a child guarded by ``extra == "x"`` counts only when x is asked)."""
    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(req, "") for req in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        names.add(name)
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            try:
                requires = distribution(name).requires or []
            except PackageNotFoundError:
                continue  # not installed: the test reports it (a locked name) or its absence from the lock
            todo += [(Requirement(child), wanted) for child in requires]
    return names


def test_every_pin_has_hashes_and_nothing_heavy_slipped_in() -> None:
    pins = _lock()
    assert len(pins) > 20
    assert [n for n, (_, hashes) in pins.items() if not hashes] == []
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in pins.values() for h in hashes)
    assert NEVER.isdisjoint(pins), f"the lock pulls in {sorted(NEVER & set(pins))}"


def test_direct_dependencies_are_locked_within_their_ranges() -> None:
    pins = _lock()
    problems = []
    for req in _direct():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req} but the lock has {pins[name][0]}")
    assert not problems, "requirements.lock lags pyproject.toml (run `make lock`):\n" + "\n".join(problems)


def test_installed_closure_is_exactly_the_locked_set() -> None:
    pins = _lock()
    closure = _closure(_direct())
    problems = [f"{name} is needed but not in the lock" for name in sorted(closure - set(pins))]
    for name, (locked, _) in sorted(pins.items()):
        try:
            installed = distribution(name).version
        except PackageNotFoundError:
            problems.append(f"{name}=={locked} is locked but not installed")
            continue
        if installed != locked:
            problems.append(f"{name}: installed {installed}, locked {locked}")
    hint = "this environment is not the locked set (run `make install`):\n"
    assert not problems, hint + "\n".join(problems)
