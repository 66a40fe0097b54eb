"""Run every benchmark in scripts/bench/ once and write docs/benchmarks.md (``make bench``).

Each benchmark prints one JSON document with its figures *and* the baseline it measured in the
same run (bare aiohttp, plain Dramatiq, MABWiser, a bare WebSocket broadcast), because this
machine is noisy and only same-run comparisons mean anything. This script collects them, keeps
the raw JSON next to the page (docs/benchmarks.json), and renders the tables.

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
