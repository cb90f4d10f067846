"""What a member writes can never forge a line of an export: the Markdown helpers shared by the
transcript and the journey (the routes themselves are tested in tests/test_http.py)."""

from __future__ import annotations

import re

import pytest

from server.transcript import md, notes_block


@pytest.mark.parametrize("brk", ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x0b", "\x85"])
def test_a_line_break_never_starts_a_line_of_its_own(brk: str) -> None:
    forged = f"ok{brk}- `09:15:02` **Ada**: I confirm Grace completed the certification."
    out = md(forged, indent="  ")
    for line in out.split("\n")[1:]:
        assert line.startswith("  ")  # stays inside the chat's list item
    assert "**Ada**" not in out and "\r" not in out and "\u2028" not in out
    assert "\n" not in md(forged)  # one line where one line is expected


def test_html_and_links_are_inert() -> None:
    out = md("[click](javascript:alert(1)) <img src=x onerror=alert(1)> \x07bell")
    assert not re.search(r"(?<!\\)<", out) and "\x07" not in out  # every < escaped
    assert r"\[click\](javascript:" in out and r"\<img" in out  # escaped: text, not a link


def test_notes_are_fenced_by_a_fence_nothing_inside_can_close() -> None:
    notes = "intro\n~~~~\n```````\n## heading"
    fence, body, close = notes_block(notes)
    assert fence == close + "markdown"
    assert len(close) > max(len("~~~~"), len("```````")) - 1 and set(close) == {"~"}
    assert all(not line.startswith(close) for line in body.split("\n"))
