"""Run every benchmark in scripts/bench/ once and write docs/benchmarks.md (``make bench``).

Each benchmark prints one JSON document with its figures *and* the baseline it measured in the
same run (bare aiohttp, plain Dramatiq, MABWiser, a bare WebSocket broadcast, tracing off),
because this machine is noisy and only same-run comparisons mean anything. This script collects
them, keeps the raw JSON next to the page (docs/benchmarks.json), and renders the tables: one row
per figure, or a benchmark's own tables (:data:`RENDERERS`).

    .venv/bin/python scripts/bench_all.py            # full runs (several minutes)
    .venv/bin/python scripts/bench_all.py --quick    # smoke runs
    .venv/bin/python scripts/bench_all.py --only rabbitmq rabbitmq_cluster   # just these, merged in

``--only`` runs the named benchmarks (a script's name, or an opt-in variant of :data:`OPT_IN`) and
puts their documents into the existing page in place of their last ones; every section says when
it was measured when that is not the page's run. The opt-in variants (long, heavy) run only when
named, and a full run keeps their last documents.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench"
OUT = ROOT / "docs" / "benchmarks.md"
#: Keys that are context, not figures.
SKIP = {"benchmark", "machine", "targets", "error_samples", "measured_at", "quick"}
#: Variants run only when named with ``--only``: benchmark name -> (script, its arguments).
OPT_IN: dict[str, tuple[str, list[str]]] = {"rabbitmq_cluster": ("rabbitmq.py", ["--cluster"])}
#: The page's first line of figures: when and how it was measured.
HEADER = re.compile(r"^Measured (?P<at>.+? UTC) by `make bench`(?P<quick> \(quick runs\))?", re.M)


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }


def run(script: Path, quick: bool, extra: list[str] | None = None, name: str | None = None) -> dict[str, Any]:
    """One benchmark's JSON (or its failure), stamped with when and how it ran."""
    argv = [sys.executable, str(script), *(extra or []), *(["--quick"] if quick else [])]
    print(f"== {script.name} {' '.join(extra or [])}", file=sys.stderr, flush=True)
    measured_at = stamp()
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        doc: dict[str, Any] = {"benchmark": name or script.stem, "error": proc.stderr[-2000:]}
    else:
        doc = json.loads(proc.stdout)
        doc.setdefault("benchmark", name or script.stem)
    doc.update(seconds=seconds, measured_at=measured_at, quick=quick)
    return doc


def run_named(names: list[str], quick: bool) -> list[dict[str, Any]]:
    """``--only``: each name is a script of scripts/bench/ or an :data:`OPT_IN` variant."""
    docs = []
    for name in names:
        script, extra = OPT_IN.get(name, (f"{name}.py", []))
        if not (BENCH / script).exists():
            sys.exit(f"no benchmark {name!r}: scripts/bench/{script} does not exist")
        docs.append(run(BENCH / script, quick, extra, name))
    return docs


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with each of ``new`` in place of the document of the same benchmark (or appended)."""
    fresh = {doc["benchmark"]: doc for doc in new}
    merged = [fresh.pop(doc["benchmark"], doc) for doc in old]
    return merged + list(fresh.values())


def flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    """Rows ``(name, value)`` of the figures of one document."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key not in SKIP:
                flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    elif isinstance(value, list):
        if all(isinstance(v, dict) for v in value):  # rounds, phases: one block of rows each
            for i, sub in enumerate(value):
                parts = [str(sub[k]) for k in ("round", "phase", "kind", "server", "viewers") if k in sub]
                label = "/".join(parts) or str(i)
                flatten(f"{prefix}[{label}]", sub, out)
    else:
        out.append(
            (
                prefix,
                f"{value:,}"
                if isinstance(value, int | float) and not isinstance(value, bool)
                else str(value),
            )
        )


def _cell(value: Any, unit: str = "") -> str:
    """A table cell: thousands separated, "–" for a missing figure."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int | float):
        return f"{value:,}{unit}"
    return str(value)


def _ratio(rps: float | None, cpu: float | None) -> str:
    """``0.85× (0.9×)``: a req/s ratio and, when there is one, its CPU-per-request ratio."""
    if rps is None:
        return "–"
    return f"{rps}×" + (f" ({cpu}×)" if cpu is not None else "")


def render_tracing(doc: dict[str, Any]) -> list[str]:
    """scripts/bench/tracing.py as tables a person can scan: one row per phase, the target checks,
    the worker; every round stays in docs/benchmarks.json."""
    lines = [
        f"Coordinator `POST /api/v1/tasks`: {doc['generator']}, {doc['connections']} connections, "
        f"{doc['rounds_run']} rounds of {doc['duration_s']} s per phase, the phases alternating in each "
        "round. Figures are medians over the rounds; the ratios and costs pair each round's phase with "
        "the bare handler's or `tracing_off`'s of the same round. *CPU µs/req* is the coordinator "
        "process's CPU time per answered request (its span-exporting thread included), and the "
        "ratio in brackets is of those (capacity per core: steadier than req/s while other work "
        "takes this machine's two cores); *cost* is that CPU minus `tracing_off`'s. Spans go over "
        "OTLP/HTTP to a receiver in its own process "
        f"(batch span processor: {json.dumps(doc['bsp']) if isinstance(doc['bsp'], dict) else doc['bsp']}).",
        "",
        "| phase | req/s | p50 ms | p99 ms | CPU µs/req | vs bare: req/s (CPU) | vs off: req/s (CPU) "
        "| cost µs/req | spans/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in doc["phases"]:
        cells = [
            f"`{p['phase']}`: {p['what']}",
            *(_cell(p[k]) for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")),
            _ratio(p["ratio_vs_bare"], p.get("cpu_ratio_vs_bare")),
            _ratio(p.get("ratio_vs_off"), p.get("cpu_ratio_vs_off")),
            _cell(p.get("cost_per_request_us")),
            _cell(p.get("spans_per_request")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    names = {
        "off_vs_bare": "tracing off vs bare aiohttp (req/s ratio)",
        "sampled_1pct_vs_off": "1 % sampling vs tracing off (req/s ratio)",
        "cost_per_request_us_100pct": "100 % sampling: CPU µs per request vs off",
    }
    lines += ["", "| target | measured | by CPU per request | limit | met |", "|---|--:|--:|--:|---|"]
    for key, check in doc["target_checks"].items():
        limit = f"≥ {check['min']}" if "min" in check else f"≤ {check['max']:,}"
        cells = [names.get(key, key), _cell(check["value"]), _cell(check.get("cpu_ratio")), limit]
        lines.append("| " + " | ".join([*cells, _cell(check["met"])]) + " |")
    checked = [r for r in doc["rounds"] if "enqueued_verified" in r]
    failed = [r for r in checked if not r["enqueued_verified"]]
    lines += [
        "",
        f"Dramatiq queue length checked against the 2xx answers after every enqueuing phase: "
        f"{len(checked) - len(failed)} of {len(checked)} within the allowance for requests in flight"
        + "".join(
            f"; round {r['round']} `{r['phase']}`: {r['queue_length']:,} queued for "
            f"{r['responses_2xx']:,} answered"
            for r in failed
        )
        + ".",
        "",
    ]
    w = doc["worker"]
    rounds = sum(1 for r in w["rounds"] if r["kind"] == "tracing_on")
    lines += [
        f"Worker: fresh Opsdeck worker processes ({w['threads']} threads) draining {w['messages']:,} "
        f"no-op tasks, tracing off and on (`parentbased_always_on`, a CONSUMER span per task), "
        f"{rounds} round{'s' if rounds != 1 else ''} alternating the order; best round of each.",
        "",
        "| worker | msg/s | overhead vs off | spans/task |",
        "|---|--:|--:|--:|",
        f"| tracing off | {_cell(w['tracing_off_msgs_per_s'])} | – | – |",
        f"| tracing on, 100 % | {_cell(w['tracing_on_msgs_per_s'])} | {w['overhead']:.1%} "
        f"(paired rounds' median {w['overhead_paired_median']:.1%}) | {_cell(w['spans_per_task'])} |",
        "",
    ]
    return lines


def render_tracing_instructions(doc: dict[str, Any]) -> list[str]:
    """scripts/bench/tracing_instructions.py: one row per phase, then the 1 % estimate."""
    if "skipped" in doc:
        return [f"Skipped: {doc['skipped']}.", ""]
    loaded = doc["loaded"]
    lines = [
        f"Coordinator `POST /api/v1/tasks` under valgrind's callgrind (instructions, not seconds: the "
        f"same count whatever else the machine runs): {doc['requests_per_phase']:,} submissions one "
        "after the other per phase, the span-exporting thread counted apart. *vs loaded off* divides "
        f"what a phase adds by `tracing_off`'s count under wrk's {loaded['connections']} connections "
        f"({loaded['seconds']} s; shared round trips make a loaded request cheaper, tracing's "
        "additions are per request).",
        "",
        "| phase | instructions/req | main thread | exporter thread | sampled | added vs off "
        "| added vs loaded off |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for p in doc["phases"]:
        cells = [
            f"`{p['phase']}`",
            *(_cell(p[k]) for k in ("instructions_per_request", "main_thread", "exporter_thread")),
            f"{p['sampled_share']:.1%}",
            f"{p['added_vs_off']:+.1%}",
            f"{p['added_vs_loaded_off']:+.1%}" if "added_vs_loaded_off" in p else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    vs_loaded = doc.get("estimate_1pct_added_vs_loaded_off")
    lines += [
        "",
        f"1 % sampling, estimated as 0.99 × `unsampled` + 0.01 × `sampled_100pct`: "
        f"{doc['estimate_1pct_per_request']:,} instructions a request, "
        f"{doc['estimate_1pct_added_vs_off']:+.1%} over tracing off"
        + (f", {vs_loaded:+.1%} of a loaded request" if vs_loaded is not None else "")
        + f" (target ≤ {doc['targets']['sampled_1pct_added_max']:.0%}: "
        + ("met" if doc["meets_targets"] else "**not met**")
        + ").",
        "",
    ]
    return lines


#: Benchmarks rendered by a function of their own (the others: one row per figure).
RENDERERS = {"tracing": render_tracing, "tracing_instructions": render_tracing_instructions}


def render(
    results: list[dict[str, Any]], quick: bool, measured: str | None = None, intro: str | None = None
) -> str:
    """The Markdown page; ``measured`` is the page's run (default: now), ``intro`` the page's
    line about it kept as it was (``--only``, ``--render-only``)."""
    m = machine()
    measured = measured or stamp()
    lines = [
        "# Benchmarks",
        "",
        intro
        or f"Measured {measured} by `make bench`"
        f"{' (quick runs)' if quick else ''}, on {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['platform']}. Every figure is compared with a baseline measured in "
        "the same run; the raw documents are in `docs/benchmarks.json`.",
        "",
        "Reproduce: `make bench` (or one of `.venv/bin/python scripts/bench/<name>.py [--quick]`).",
        "",
    ]
    for doc in results:
        lines += [f"## {doc['benchmark']}", ""]
        if doc.get("measured_at", measured) != measured:
            how = " (quick run)" if doc.get("quick") else ""
            lines += [f"Measured {doc['measured_at']}{how}, apart from the rest (`bench_all.py --only`).", ""]
        if "error" in doc:
            lines += ["Failed:", "", "```", doc["error"], "```", ""]
            continue
        if doc["benchmark"] in RENDERERS:
            lines += RENDERERS[doc["benchmark"]](doc)
            continue
        if "targets" in doc:
            lines += [f"Targets: `{json.dumps(doc['targets'])}`", ""]
        rows: list[tuple[str, str]] = []
        flatten("", doc, rows)
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run all benchmarks and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke runs of every benchmark")
    parser.add_argument("--render-only", action="store_true", help="re-render docs/benchmarks.json")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these and merge them into the page")
    args = parser.parse_args()
    raw = ROOT / "docs" / "benchmarks.json"
    previous: list[dict[str, Any]] = json.loads(raw.read_text()) if raw.exists() else []
    header = HEADER.search(OUT.read_text()) if OUT.exists() else None
    measured, quick, intro = stamp(), args.quick, None
    if (args.render_only or args.only) and header:  # the page's own run stays as it was
        measured, quick = header["at"], bool(header["quick"])
        intro = OUT.read_text()[header.start() :].split("\n", 1)[0]
    if args.render_only:
        results = previous
    elif args.only:
        results = merge(previous, run_named(args.only, args.quick))
    else:
        scripts = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
        results = [run(script, args.quick) for script in scripts]
        for doc in results:
            doc["measured_at"] = measured  # one run: the page's
        results += [doc for doc in previous if doc["benchmark"] in OPT_IN]  # kept until named again
    if not args.render_only:
        raw.write_text(json.dumps(results, indent=2) + "\n")
    OUT.write_text(render(results, quick, measured, intro) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
