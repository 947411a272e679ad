"""common.console: tables as plain text in logs, number cells that read well."""

from __future__ import annotations

import io

from common.console import cell, render, show, table


def test_cells() -> None:
    assert cell(None) == "-" and cell(float("nan")) == "-"
    assert cell(12345) == "12,345"
    assert cell(0.123456) == "0.1235"
    assert cell(True) == "true"
    assert cell("x") == "x"


def test_plain_table_has_a_header_aligned_columns_and_no_trailing_blanks() -> None:
    text = render(table(["issue", "pr_auc"], [["spam", 0.5], ["ban", float("nan")]]))
    lines = text.splitlines()
    assert lines[0].split() == ["issue", "pr_auc"]
    assert [line.split() for line in lines[2:]] == [["spam", "0.5000"], ["ban", "-"]]
    assert all(line == line.rstrip() for line in lines)
    # numbers are right-aligned: their last characters line up
    assert len(lines[2]) == len(lines[3])


def test_show_writes_plain_text_to_a_file() -> None:
    out = io.StringIO()
    show(table(["a", "b"], [[1, 2]]), file=out)
    assert out.getvalue() == render(table(["a", "b"], [[1, 2]])) + "\n"
    assert "\x1b[" not in out.getvalue()  # no colour codes in a file
