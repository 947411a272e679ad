"""The console's shared list-page macros: filter selects and the pager, rendered through the
console's own Jinja environment (autoescaping, StrictUndefined)."""

from __future__ import annotations

from serving.review.routers.console import _env

HOSTILE = '"><script>alert(1)</script>'


def _render(source: str, **context) -> str:
    return _env.from_string(
        '{% from "_macros.html" import pager, select_filter %}' + source
    ).render(**context)


def test_select_filter_marks_the_current_option_and_escapes_values():
    html = _render(
        "{{ select_filter('Issue', 'issue', opts, cur) }}", opts=["spam", HOSTILE], cur=HOSTILE
    )
    assert "<script>" not in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" selected' in html
    assert '<option value="spam">' in html  # not selected
    assert '<option value="">all</option>' in html


def test_pager_links_keep_the_filters_and_appear_only_where_a_page_exists():
    params = {"issue": "a&b", "status": ""}
    middle = _render("{{ pager('/console', p, 2, 3, 70, 'items') }}", p=params)
    assert 'href="/console?issue=a%26b&amp;status=&amp;page=1"' in middle
    assert 'href="/console?issue=a%26b&amp;status=&amp;page=3"' in middle
    assert "page 2 of 3 · 70 items" in middle
    first = _render("{{ pager('/console', p, 1, 1, 5, 'items') }}", p=params)
    assert "previous" not in first and "next" not in first
