"""Run every benchmark in scripts/bench/ once and write docs/benchmarks.md (``make bench``).

Each benchmark prints one JSON document with its figures *and* the baseline it measured in the
same run (bare aiohttp, plain Dramatiq, MABWiser, a bare WebSocket broadcast), because this
machine is noisy and only same-run comparisons mean anything. This script collects them, keeps
the raw JSON next to the page (docs/benchmarks.json), and renders the tables.

    .venv/bin/python scripts/bench_all.py            # full runs (several minutes)
    .venv/bin/python scripts/bench_all.py --quick    # smoke runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench"
OUT = ROOT / "docs" / "benchmarks.md"
#: Keys that are context, not figures.
SKIP = {"benchmark", "machine", "targets", "error_samples"}


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


def run(script: Path, quick: bool) -> dict[str, Any]:
    """One benchmark's JSON (or its failure)."""
    argv = [sys.executable, str(script), *(["--quick"] if quick else [])]
    print(f"== {script.name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"benchmark": script.stem, "error": proc.stderr[-2000:], "seconds": seconds}
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc.setdefault("benchmark", script.stem)
    doc["seconds"] = seconds
    return doc


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


def render(results: list[dict[str, Any]], quick: bool) -> str:
    """The Markdown page."""
    m = machine()
    lines = [
        "# Benchmarks",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench`"
        f"{' (quick runs)' if quick else ''}, on {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['platform']}. Every figure is compared with a baseline measured in "
        "the same run; the raw documents are in `docs/benchmarks.json`.",
        "",
        "Reproduce: `make bench` (or one of `.venv/bin/python scripts/bench/<name>.py [--quick]`).",
        "",
    ]
    for doc in results:
        lines += [f"## {doc['benchmark']}", ""]
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
    args = parser.parse_args()
    raw = ROOT / "docs" / "benchmarks.json"
    if args.render_only:
        results = json.loads(raw.read_text())
    else:
        scripts = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
        results = [run(script, args.quick) for script in scripts]
        raw.write_text(json.dumps(results, indent=2) + "\n")
    OUT.write_text(render(results, args.quick) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
