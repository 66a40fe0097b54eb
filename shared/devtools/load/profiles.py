"""Load profiles: how many virtual users run when, for how long, and with which faults.

A profile is a list of stages ``(share of the duration, users)``; the runner turns the shares
into seconds once the duration is known. ``--quick`` picks smaller numbers that fit in CI
(each quick run, startup and shutdown included, stays under a minute).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Longest run accepted (seconds): every run stops by itself.
MAX_DURATION = 24 * 3600.0
#: Longest traffic window of a ``--quick`` run (seconds); startup and drain come on top.
MAX_QUICK_DURATION = 40.0
#: Most virtual users accepted.
MAX_USERS = 1000


@dataclass(frozen=True, slots=True)
class Profile:
    """One load shape."""

    name: str
    description: str
    stages: tuple[tuple[float, int], ...]
    duration: float
    quick_stages: tuple[tuple[float, int], ...]
    quick_duration: float
    chaos: bool = False
    memory_samples: bool = False


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "sustained",
            "steady traffic from 10 users",
            stages=((1.0, 10),),
            duration=3600.0,
            quick_stages=((1.0, 10),),
            quick_duration=20.0,
        ),
        Profile(
            "burst",
            "50 users all starting at once",
            stages=((1.0, 50),),
            duration=300.0,
            quick_stages=((1.0, 25),),
            quick_duration=20.0,
        ),
        Profile(
            "spike",
            "5 users, then 100, then 5 again (thirds of the duration)",
            stages=((1 / 3, 5), (1 / 3, 100), (1 / 3, 5)),
            duration=300.0,
            quick_stages=((1 / 3, 2), (1 / 3, 20), (1 / 3, 2)),
            quick_duration=24.0,
        ),
        Profile(
            "soak",
            "steady traffic from 10 users for a long, bounded time; memory growth per process",
            stages=((1.0, 10),),
            duration=4 * 3600.0,
            quick_stages=((1.0, 5),),
            quick_duration=25.0,
            memory_samples=True,
        ),
        Profile(
            "chaos",
            "10 users while 30 % of the time is under injected faults (SIGKILLed Dramatiq processes, "
            "Redis latency)",
            stages=((1.0, 10),),
            duration=600.0,
            quick_stages=((1.0, 6),),
            quick_duration=25.0,
            chaos=True,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A profile resolved for one run: stages in seconds."""

    profile: Profile
    quick: bool
    duration: float
    stages: tuple[tuple[float, int], ...]  # (seconds, users)

    @property
    def peak_users(self) -> int:
        """Most users at any time."""
        return max(users for _, users in self.stages)


def plan(name: str, *, quick: bool, duration: float | None, users: int | None) -> Plan:
    """Resolve ``name`` with the command-line overrides; ValueError on out-of-range input.

    ``users`` replaces the peak; other stages keep their ratio to the peak (at least 1 user).
    """
    profile = PROFILES[name]
    total = duration if duration is not None else (profile.quick_duration if quick else profile.duration)
    limit = MAX_QUICK_DURATION if quick else MAX_DURATION
    if not 1 <= total <= limit:
        raise ValueError(
            f"--duration must be between 1 and {limit:g} seconds{' with --quick' if quick else ''}"
        )
    shares = profile.quick_stages if quick else profile.stages
    peak = max(u for _, u in shares)
    if users is not None:
        if not 1 <= users <= MAX_USERS:
            raise ValueError(f"--users must be between 1 and {MAX_USERS}")
        shares = tuple((s, max(1, round(u * users / peak))) for s, u in shares)
    return Plan(profile, quick, float(total), tuple((s * total, u) for s, u in shares))
