"""The themes' colours (``:root`` and ``:root[data-theme="dark"]`` of dashboard/static/app.css) keep
WCAG AA contrast (4.5:1) for every text colour on every background it is drawn on, in both themes
(the browser test, tests/dashboard/test_browser_phone.py, checks the pages as drawn)."""

from __future__ import annotations

import pytest

from tests.dashboard.contrast import contrast, declared, variables

AA = 4.5
#: text colour variables → the background variables they are drawn on
PAIRS = {
    ("--fg", "--muted", "--ok", "--warn", "--crit", "--accent", "--link"): ("--bg", "--card", "--chart-bg"),
    ("--btn-fg", "--crit"): ("--btn-bg",),
    ("--head-fg", "--head-muted"): ("--head-bg", "--head-input"),
    ("--err-fg",): ("--err-bg",),
    ("--note-fg",): ("--note-bg",),
}


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_text_colour_reads_on_its_backgrounds(theme):
    colours = variables(theme)
    low = {
        (fg, bg): round(contrast(colours[fg], colours[bg]), 2)
        for fgs, bgs in PAIRS.items()
        for fg in fgs
        for bg in bgs
        if contrast(colours[fg], colours[bg]) < AA
    }
    assert low == {}


def test_the_dark_theme_sets_every_colour_the_light_one_does():
    assert set(variables("dark")) == set(variables("light"))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_nav_and_log_out_are_the_headers_text_on_the_headers_background(theme):
    """The old phone header let nav links and Log out overflow onto the page's light background
    (1.16:1); they are the header's colours now, and the header holds them (the browser test)."""
    bg = declared("background", "header", theme=theme)
    for selector in ("header a", "button.link"):
        assert contrast(declared("color", selector, theme=theme), bg) >= AA, selector
