"""The playbook the worker uses: ``KNOWLEDGE_BASE_PATH`` when set, else the shipped ``playbook.json``.

The schema lives in :mod:`shared.playbook` (every process validates ``KNOWLEDGE_BASE_PATH`` when it
loads its settings); this module only picks the file and keeps one parsed copy per path.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from shared.playbook import Playbook, load_playbook
from shared.settings import Settings

#: The playbook shipped with the worker.
DEFAULT_PLAYBOOK = Path(str(files("worker.coach") / "playbook.json"))


@cache
def _load(path: Path) -> Playbook:
    return load_playbook(path)


def playbook_for(settings: Settings) -> Playbook:
    """The validated playbook for these settings (parsed once per path and process)."""
    return _load(settings.knowledge_base_path or DEFAULT_PLAYBOOK)
