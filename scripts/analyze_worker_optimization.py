"""The seeds name for `opsdeck analyze` (same options: --json, --min-score N)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.devtools.cli import main

if __name__ == "__main__":
    main(["analyze", *sys.argv[1:]])
