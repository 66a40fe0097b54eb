"""Benchmark: MABWiser's LinUCB and Vowpal Wabbit against ours, in process and through Redis.

Everything runs one round at a time, as a chat product uses a bandit: a *decision* is one
``predict`` (MABWiser) / ``decide`` (ours), an *update* one ``partial_fit`` / ``update``, a
*round* a decision followed by the update of the chosen arm. All models get the same synthetic
linear problem (d = 11 coaching features, 3 arms, Gaussian noise) and the same alpha, and ours is
configured like MABWiser (λ = 1, no priors, no warm-up) so that both make the same decisions on
the same stream: ``equal_regret`` reports both regrets and the share of identical decisions.

* ``mabwiser``: ``MAB(LearningPolicy.LinUCB(alpha))``, fitted on one row, then predict / partial_fit;
* ``vowpalwabbit``: the second anchor, a different algorithm on the same stream (so its regret is
  reported, not equal decisions): ``--cb_explore_adf`` with the shared context as one namespace,
  each arm as an action namespace and ``-q sa`` (one linear model per arm, as disjoint LinUCB),
  cost = −reward, the arm sampled from VW's pmf (seeded per repeat) and learned with its
  probability. The exploration settings are run side by side, none tuned to this stream:
  ``squarecb`` (the comparison: SquareCB spreads probability by the estimated gap to the best arm
  and shrinks it as the model gets surer, the closest of VW's explorers to an optimism bonus that
  shrinks with confidence; VW's defaults ``gamma_scale`` 10, exponent 0.5), ``epsilon`` (0.05, VW's
  default explorer) and ``bag`` (5 bootstrapped models, VW's ensemble explorer). (``--regcbopt``,
  VW's optimistic explorer, needs its cost range and mellowness set for a stream; it is left out
  rather than tuned.) The examples' text is built before the clock starts, so VW is timed on its
  own parse, predict and learn;
* ``inprocess``: :class:`worker.bandit.linucb.LinUCB`;
* ``redis_1proc``: :class:`worker.bandit.redis_state.RedisLinUCB` against a private redis-server
  (``EmbeddedRedis``, no AOF, never port 6379); each update runs the atomic, idempotent script;
  ``ping_round_trip_us`` (a PING) and ``server_us_per_script`` (Redis's own time per script
  call, from INFO commandstats) show where a Redis round's time goes: 2 round trips + the scripts;
* ``redis_1proc_one_core``: the same with this process *and* the redis-server pinned to one CPU,
  i.e. the single core MABWiser's loop uses. On this VM a round trip between processes on two
  vCPUs costs 40–75 µs more than on one (each wake-up of the other vCPU is an inter-processor
  interrupt through the hypervisor), so ``redis_1proc`` (client on CPU 0, Redis on CPU 1) mostly
  measures that, and this phase the design itself at an equal CPU budget. Both are reported;
  ``ping_round_trip_us`` is measured in each placement;
* ``redis_2proc``: two processes sharing that state, rounds/s summed over the common window; the
  state is then checked against the one recomputed from the full rating log (``exact``).

Phases alternate for ``--repeats`` rounds and the best of each is reported, with every sample.
One JSON document goes to stdout, progress to stderr. Run from the project root::

    .venv/bin/python scripts/bench/bandit.py             # 3 repeats, 2000 rounds per phase
    .venv/bin/python scripts/bench/bandit.py --quick     # 1 repeat, 500 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402

from shared.devtools.embedded_redis import EmbeddedRedis  # noqa: E402
from worker.bandit.features import DIM  # noqa: E402
from worker.bandit.linucb import ARMS, LinUCB  # noqa: E402
from worker.bandit.redis_state import RedisLinUCB, compare, recompute  # noqa: E402

ALPHA = 1.0
NOISE = 0.1
#: Vowpal Wabbit's explorers, all run in each repeat (module docstring); the first is the one compared.
VW_EXPLORERS: dict[str, str] = {"squarecb": "--squarecb", "epsilon": "--epsilon 0.05", "bag": "--bag 5"}
TARGETS = {"inprocess_rounds_vs_mabwiser_min": 15.0, "redis_1proc_rounds_vs_mabwiser_min": 1.5}
#: Our model configured like MABWiser's LinUCB (so decisions are equal for the same stream).
PLAIN: dict[str, Any] = {"alpha": ALPHA, "priors": None, "warmup": 0}


def log(message: str) -> None:
    """A progress line on stderr (stdout is reserved for the JSON result)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def problem(rounds: int, seed: int = 2024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contexts (bias + 10 features in [0, 1]), noisy rewards and expected rewards per arm."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.0, (len(ARMS), DIM)) / np.sqrt(DIM)
    x = rng.random((rounds, DIM))
    x[:, 0] = 1.0
    expected = x @ theta.T
    return x, expected + rng.normal(0.0, NOISE, expected.shape), expected


def rate(n: int, fn: Callable[[], object]) -> float:
    """Calls per second of ``fn`` run ``n`` times."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def timed(fn: Callable[[], int]) -> float:
    """Rate of a loop that returns how many operations it made."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


# -- the three subjects ------------------------------------------------------------------------


def mabwiser_phase(x: np.ndarray, rewards: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """MABWiser: rounds/s (and the choices), then decisions/s and updates/s on the trained model."""
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(arms=list(ARMS), learning_policy=LearningPolicy.LinUCB(alpha=ALPHA), seed=0)
    mab.fit([ARMS[0]], [float(rewards[0, 0])], x[:1])
    chosen = np.zeros(len(x), dtype=np.int64)

    def rounds() -> int:
        for t in range(1, len(x)):
            arm = mab.predict(x[t : t + 1])
            j = ARMS.index(arm)
            chosen[t] = j
            mab.partial_fit([arm], [float(rewards[t, j])], x[t : t + 1])
        return len(x) - 1

    out = {"rounds_per_s": timed(rounds)}
    rows = iter([x[t : t + 1] for t in range(len(x))])
    out["decisions_per_s"] = rate(len(x), lambda: mab.predict(next(rows)))
    rows = iter([x[t : t + 1] for t in range(len(x))])
    out["updates_per_s"] = rate(len(x), lambda: mab.partial_fit(["npc"], [0.5], next(rows)))
    return out, chosen


def vw_lines(x: np.ndarray) -> list[str]:
    """The shared-context line of each round, in VW's text format (namespace ``s``)."""
    return ["shared |s " + " ".join(f"{i}:{v:.9g}" for i, v in enumerate(row)) for row in x]


def vw_phase(
    options: str, shared: list[str], rewards: np.ndarray, seed: int
) -> tuple[dict[str, float], np.ndarray]:
    """Vowpal Wabbit ``--cb_explore_adf``: rounds/s (and the sampled choices), then decisions/s
    and updates/s on the trained model."""
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(
        f"--cb_explore_adf {options} -q sa --quiet --random_seed {seed}", enable_logging=False
    )
    actions = [f"|a {arm}" for arm in ARMS]
    rng = np.random.default_rng(seed)
    draws = rng.random(len(shared))
    chosen = np.zeros(len(shared), dtype=np.int64)

    def rounds() -> int:
        for t in range(len(shared)):
            example = [shared[t], *actions]
            pmf = vw.predict(example)
            j = min(int(np.searchsorted(np.cumsum(pmf), draws[t] * sum(pmf), side="right")), len(ARMS) - 1)
            chosen[t] = j
            example[j + 1] = f"0:{-float(rewards[t, j]):.9g}:{pmf[j]:.9g} {actions[j]}"
            vw.learn(example)
        return len(shared)

    out = {"rounds_per_s": timed(rounds)}
    rows = iter(shared)
    out["decisions_per_s"] = rate(len(shared), lambda: vw.predict([next(rows), *actions]))
    labelled = iter([[row, f"0:-0.5:0.5 {actions[0]}", *actions[1:]] for row in shared])
    out["updates_per_s"] = rate(len(shared), lambda: vw.learn(next(labelled)))
    vw.finish()
    return out, chosen


def ours_phase(
    model_factory: Callable[[], Any], x: np.ndarray, rewards: np.ndarray, keyed: bool
) -> tuple[dict[str, float], np.ndarray]:
    """Ours (in-memory or Redis): rounds/s with the choices, then decisions/s and updates/s."""
    model = model_factory()
    chosen = np.zeros(len(x), dtype=np.int64)
    prefix = f"{time.monotonic_ns()}"

    def rounds() -> int:
        for t in range(1, len(x)):  # round 0 is MABWiser's initial fit: arm 0, as below
            arm = model.decide(x[t]).arm
            j = ARMS.index(arm)
            chosen[t] = j
            if keyed:
                model.update(arm, x[t], float(rewards[t, j]), key=f"{prefix}:{t}")
            else:
                model.update(arm, x[t], float(rewards[t, j]))
        return len(x) - 1

    if keyed:
        model.update("npc", x[0], float(rewards[0, 0]), key=f"{prefix}:0")
    else:
        model.update("npc", x[0], float(rewards[0, 0]))
    out = {"rounds_per_s": timed(rounds)}
    rows = iter(list(x))
    out["decisions_per_s"] = rate(len(x), lambda: model.decide(next(rows)))
    numbered = iter(enumerate(x))

    def one_update() -> None:
        t, row = next(numbered)
        if keyed:
            model.update("npc", row, 0.5, key=f"u{prefix}:{t}")
        else:
            model.update("npc", row, 0.5)

    out["updates_per_s"] = rate(len(x), one_update)
    return out, chosen


@contextlib.contextmanager
def placed(redis_pid: int, *, client_cpu: int, redis_cpu: int) -> Iterator[bool]:
    """Pin this process and the redis-server to the given CPUs for one phase (yields False, and
    pins nothing, on a machine without both CPUs); both get their previous affinity back."""
    mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(redis_pid)
    if not {client_cpu, redis_cpu} <= mine:
        yield False
        return
    os.sched_setaffinity(0, {client_cpu})
    os.sched_setaffinity(redis_pid, {redis_cpu})
    try:
        yield True
    finally:
        os.sched_setaffinity(0, mine)
        os.sched_setaffinity(redis_pid, theirs)


def redis_phase(
    client: redis.Redis, x: np.ndarray, rewards: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """``redis_1proc`` in the current placement, with Redis's own time per script and a PING."""
    client.flushall()
    client.config_resetstat()
    s, chosen = ours_phase(lambda: RedisLinUCB(client, log_maxlen=0, **PLAIN), x, rewards, keyed=True)
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    s["server_us_per_script"] = float(stats.get("usec_per_call", 0.0))
    s["ping_round_trip_us"] = 1e6 / rate(500, client.ping)
    return s, chosen


def redis_worker(url: str, worker: int, rounds: int, start: Any, out: Any) -> None:
    """One of the two Redis processes: ``rounds`` decide + update rounds on the shared state."""
    client = redis.Redis.from_url(url)
    model = RedisLinUCB(client, log_maxlen=0, seed=worker, **PLAIN)
    x, rewards, _ = problem(rounds, seed=100 + worker)
    start.wait(60)
    t0 = time.time()
    for t in range(rounds):
        arm = model.decide(x[t]).arm
        model.update(arm, x[t], float(rewards[t, ARMS.index(arm)]), key=f"p{worker}:{t}")
    out.put((worker, t0, time.time()))
    client.close()


def redis_2proc_phase(url: str, rounds: int) -> dict[str, Any]:
    """Two processes, ``rounds`` rounds each, on one fresh shared state; exactness checked after."""
    client = redis.Redis.from_url(url)
    client.flushall()
    RedisLinUCB(client, **PLAIN).init()
    ctx = get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=redis_worker, args=(url, w, rounds, start, out)) for w in (0, 1)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let both import and connect
    start.set()
    spans = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    begin, end = min(s[1] for s in spans), max(s[2] for s in spans)
    shared = RedisLinUCB(client, log_maxlen=0, **PLAIN)
    state = shared.load()
    problems = compare(state, recompute(shared.ratings(), priors=None))
    client.close()
    return {
        "rounds_per_s": 2 * rounds / (end - begin),
        "updates_counted": sum(state.updates),
        "exact": not problems and sum(state.updates) == 2 * rounds,
        "problems": problems[:5],
    }


def regret(expected: np.ndarray, chosen: np.ndarray) -> float:
    """Cumulative expected regret of a sequence of choices."""
    return float((expected.max(axis=1) - expected[np.arange(len(chosen)), chosen]).sum())


def best(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per metric, the best sample (rates: highest; times in µs: lowest)."""
    return {k: (min if k.endswith("_us") else max)(s[k] for s in samples) for k in samples[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="rounds per phase and process")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions (best reported)")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 500 rounds")
    args = parser.parse_args()
    rounds, repeats = (500, 1) if args.quick else (args.rounds, args.repeats)
    x, rewards, expected = problem(rounds)
    shared = vw_lines(x)
    samples: dict[str, list[dict[str, float]]] = {
        "mabwiser": [], "inprocess": [], "redis_1proc": [], "redis_1proc_one_core": []
    }  # fmt: skip
    vw_samples: dict[str, list[dict[str, float]]] = {name: [] for name in VW_EXPLORERS}
    two: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bandit-") as tmp:
        server = EmbeddedRedis(Path(tmp), aof=False)
        assert server.port != 6379
        server.start()
        assert server.proc is not None
        redis_pid = server.proc.pid
        try:
            client = redis.Redis.from_url(server.url)
            for rep in range(repeats):
                log(f"repeat {rep + 1}/{repeats}: mabwiser")
                m, mab_chosen = mabwiser_phase(x, rewards)
                samples["mabwiser"].append(m)
                for name, options in VW_EXPLORERS.items():
                    log(f"repeat {rep + 1}/{repeats}: vowpal wabbit {options}")
                    v, vw_chosen = vw_phase(options, shared, rewards, seed=rep)
                    vw_samples[name].append(v | {"regret": round(regret(expected, vw_chosen), 4)})
                log(f"repeat {rep + 1}/{repeats}: in-process")
                s, mem_chosen = ours_phase(lambda: LinUCB(**PLAIN), x, rewards, keyed=False)
                samples["inprocess"].append(s)
                log(f"repeat {rep + 1}/{repeats}: redis, 1 process (client and Redis on two CPUs)")
                with placed(redis_pid, client_cpu=0, redis_cpu=1):
                    s, red_chosen = redis_phase(client, x, rewards)
                samples["redis_1proc"].append(s)
                log(f"repeat {rep + 1}/{repeats}: redis, 1 process (client and Redis on one CPU)")
                with placed(redis_pid, client_cpu=0, redis_cpu=0):
                    s, _ = redis_phase(client, x, rewards)
                samples["redis_1proc_one_core"].append(s)
                log(f"repeat {rep + 1}/{repeats}: redis, 2 processes")
                two.append(redis_2proc_phase(server.url, rounds))
            client.close()
        finally:
            server.stop()
    result: dict[str, Any] = {k: best(v) | {"samples": v} for k, v in samples.items()}
    result["redis_2proc"] = {
        "rounds_per_s": max(t["rounds_per_s"] for t in two),
        "exact_every_run": all(t["exact"] for t in two),
        "samples": two,
    }
    result["vowpalwabbit"] = {
        name: {"options": f"--cb_explore_adf {VW_EXPLORERS[name]} -q sa"}
        | {k: v for k, v in best(vs).items() if k != "regret"}
        | {"regret_mean": round(float(np.mean([s["regret"] for s in vs])), 4), "samples": vs}
        for name, vs in vw_samples.items()
    }
    mab_rounds = result["mabwiser"]["rounds_per_s"]
    vw_rounds = result["vowpalwabbit"]["squarecb"]["rounds_per_s"]
    ratios = {
        "inprocess_rounds_vs_mabwiser": result["inprocess"]["rounds_per_s"] / mab_rounds,
        "inprocess_decisions_vs_mabwiser": result["inprocess"]["decisions_per_s"]
        / result["mabwiser"]["decisions_per_s"],
        "inprocess_updates_vs_mabwiser": result["inprocess"]["updates_per_s"]
        / result["mabwiser"]["updates_per_s"],
        "redis_1proc_rounds_vs_mabwiser": result["redis_1proc"]["rounds_per_s"] / mab_rounds,
        "redis_1proc_one_core_rounds_vs_mabwiser": result["redis_1proc_one_core"]["rounds_per_s"]
        / mab_rounds,
        "redis_2proc_rounds_vs_mabwiser": result["redis_2proc"]["rounds_per_s"] / mab_rounds,
        "inprocess_rounds_vs_vw": result["inprocess"]["rounds_per_s"] / vw_rounds,
        "redis_1proc_rounds_vs_vw": result["redis_1proc"]["rounds_per_s"] / vw_rounds,
        "redis_1proc_one_core_rounds_vs_vw": result["redis_1proc_one_core"]["rounds_per_s"] / vw_rounds,
        "redis_2proc_rounds_vs_vw": result["redis_2proc"]["rounds_per_s"] / vw_rounds,
        "mabwiser_rounds_vs_vw": mab_rounds / vw_rounds,
    }
    result["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    result["equal_regret"] = {
        "rounds": rounds,
        "regret_mabwiser": round(regret(expected, mab_chosen), 4),
        "regret_inprocess": round(regret(expected, mem_chosen), 4),
        "regret_redis": round(regret(expected, red_chosen), 4),
        "same_decisions_inprocess": float((mem_chosen == mab_chosen).mean()),
        "same_decisions_redis": float((red_chosen == mab_chosen).mean()),
    }
    # VW explores by sampling, so its regret varies with the seed: the mean over the repeats
    result["regret_vs_vw"] = {
        "rounds": rounds,
        "regret_linucb": round(regret(expected, mem_chosen), 4),
        **{f"regret_vw_{name}_mean": result["vowpalwabbit"][name]["regret_mean"] for name in VW_EXPLORERS},
        "regret_uniform_expected": round(float((expected.max(axis=1) - expected.mean(axis=1)).sum()), 4),
    }
    result["targets"] = TARGETS
    result["met"] = {
        "inprocess": ratios["inprocess_rounds_vs_mabwiser"] >= TARGETS["inprocess_rounds_vs_mabwiser_min"],
        "redis_1proc": ratios["redis_1proc_rounds_vs_mabwiser"]
        >= TARGETS["redis_1proc_rounds_vs_mabwiser_min"],
        "redis_1proc_one_core": ratios["redis_1proc_one_core_rounds_vs_mabwiser"]
        >= TARGETS["redis_1proc_rounds_vs_mabwiser_min"],
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dim": DIM,
        "arms": ARMS,
    }
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
