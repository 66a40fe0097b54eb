"""An invalid edited payload: the field list the API returns is shown next to the editor, in
colours a person can read (WCAG AA, contrast >= 4.5:1), and so is the Error section's text."""

from __future__ import annotations

from shared.tasks import SLEEP
from tests.dashboard.contrast import contrast, declared
from tests.dashboard.test_api import submit

AA = 4.5


def test_the_error_sections_text_is_readable_on_its_background():
    """It was red (#b91c1c, the ``.error`` rule) on dark red (#450a0a): 2.5:1."""
    fg = declared("color", "pre.error", ".error")
    bg = declared("background", "pre.error", "pre")
    assert contrast(fg, bg) >= AA, (fg, bg, contrast(fg, bg))


def test_the_field_error_list_is_readable_on_its_background():
    fg = declared("color", ".field-errors", ".field-errors li")
    bg = declared("background", ".field-errors")
    assert contrast(fg, bg) >= AA, (fg, bg, contrast(fg, bg))


async def test_the_task_page_has_a_field_error_list_by_the_editor(as_role, dash_settings):
    (task_id,) = await submit(dash_settings, task_type=SLEEP, payload={"seconds": 0})
    client, csrf = await as_role("operator")
    page = await (await client.get(f"/tasks/{task_id}")).text()
    editor = page.index('id="edited-payload"')
    box = page.index('id="edited-payload-errors"')
    button = page.index('data-body-from="edited-payload"')
    assert editor < box < button  # between the editor and its button: seen where one types
    assert 'data-errors-into="edited-payload-errors"' in page
    assert 'role="alert"' in page[box - 200 : box + 200]
    # what the list shows comes from the API's fields
    resp = await client.post(
        f"/api/tasks/{task_id}/retry", json={"payload": {"seconds": "soon"}}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 422
    fields = (await resp.json())["error"]["fields"]
    assert fields and fields[0]["loc"] == ["payload", "seconds"] and fields[0]["msg"]
