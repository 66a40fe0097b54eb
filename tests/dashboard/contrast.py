"""WCAG 2.x contrast of CSS colours, and the colours ``dashboard/static/app.css`` gives a selector
(its own rule, else a fallback rule's, with ``var(--name)`` resolved from ``:root``)."""

from __future__ import annotations

import re
from pathlib import Path

CSS = Path(__file__).resolve().parents[2] / "dashboard" / "static" / "app.css"


def _channel(c: float) -> float:
    c /= 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: tuple[float, float, float]) -> float:
    r, g, b = (_channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def parse_color(text: str) -> tuple[float, float, float]:
    """``#rgb``, ``#rrggbb`` or ``rgb(r, g, b)`` (what browsers' getComputedStyle gives)."""
    text = text.strip()
    if text.startswith("#"):
        h = text[1:]
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    found = re.match(r"rgba?\(\s*([\d.]+)[ ,]+([\d.]+)[ ,]+([\d.]+)", text)
    assert found, text
    return float(found.group(1)), float(found.group(2)), float(found.group(3))


def contrast(fg: str, bg: str) -> float:
    a, b = sorted((luminance(parse_color(fg)), luminance(parse_color(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def rules(css: str | None = None) -> dict[str, dict[str, str]]:
    """selector → declarations of the stylesheet (one entry per selector of a group)."""
    css = re.sub(r"/\*.*?\*/", "", css if css is not None else CSS.read_text(), flags=re.S)
    out: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        decls = {}
        for part in body.split(";"):
            if ":" in part:
                name, value = part.split(":", 1)
                decls[name.strip()] = value.strip()
        for sel in selectors.split(","):
            out.setdefault(sel.strip(), {}).update(decls)
    return out


#: The selector of the dark theme's variables (static/theme.js sets ``<html data-theme>``).
DARK = ':root[data-theme="dark"]'


def variables(theme: str = "light") -> dict[str, str]:
    """The ``--name`` variables of ``:root`` in ``theme`` (``light`` or ``dark``)."""
    table = rules()
    found = dict(table.get(":root", {}))
    if theme == "dark":
        found.update(table.get(DARK, {}))
    return {k: v for k, v in found.items() if k.startswith("--")}


def declared(prop: str, *selectors: str, theme: str = "light") -> str:
    """``prop`` of the first of ``selectors`` that sets it, ``var()`` resolved in ``theme``."""
    table = rules()
    root = variables(theme)
    for sel in selectors:
        value = table.get(sel, {}).get(prop)
        if value is not None:
            var = re.fullmatch(r"var\((--[\w-]+)\)", value)
            return root[var.group(1)] if var else value
    raise AssertionError(f"no rule of {selectors} sets {prop}")
