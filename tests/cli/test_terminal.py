"""Agent-controlled text is neutralised before it reaches a terminal (#12, DESIGN §3.5 #11).

Pure tests of the one function every human-facing line goes through, and of the plain
table renderer (which never interprets rich markup).
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from grantbox.cli.output import render_table, to_json, to_yaml
from grantbox.cli.terminal import neutralise

OSC_TITLE = "\x1b]0;pwned\x07"
OSC_CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
ERASE_AND_FORGE = "\x1b[2K\rforged line"
MARKUP = "a[conceal]SECRETX[/conceal]b[link=https://evil.example]clickme[/link]"


@given(st.text())
def test_nothing_unprintable_survives(text: str) -> None:
    shown = neutralise(text)
    assert all(char.isprintable() for char in shown)


@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
        )
    )
)
def test_printable_text_is_left_alone(text: str) -> None:
    assert neutralise(text) == text


@given(st.text())
def test_line_breaks_and_tabs_can_be_kept_and_nothing_else(text: str) -> None:
    shown = neutralise(text, keep="\n\t")
    assert all(char.isprintable() or char in "\n\t" for char in shown)
    assert shown.count("\n") == text.count("\n")


def test_the_reviewers_sequences_are_shown_not_played() -> None:
    assert neutralise(OSC_TITLE) == "\\x1b]0;pwned\\x07"
    assert neutralise(OSC_CLIPBOARD) == "\\x1b]52;c;ZXZpbA==\\x07"
    assert neutralise(ERASE_AND_FORGE) == "\\x1b[2K\\rforged line"
    assert neutralise("\x9b2K") == "\\x9b2K"  # C1 CSI
    assert neutralise("\x7f") == "\\x7f"
    assert neutralise("abc\u202edcba") == "abc\\u202edcba"  # bidi override
    assert neutralise("zero\u200bwidth") == "zero\\u200bwidth"


def test_tables_print_markup_literally_and_escape_controls() -> None:
    rows = [{"name": "box", "url": f"http://x/{MARKUP}", "note": OSC_TITLE}]
    columns = (("NAME", "name"), ("URL", "url"), ("NOTE", "note"))
    header, line = render_table(rows, columns)
    assert header.split() == ["NAME", "URL", "NOTE"]
    assert MARKUP in line
    assert "\x1b" not in line and "\\x1b]0;pwned\\x07" in line
    [bare] = render_table(rows, columns, headers=False)
    assert bare.split() == line.split()
    assert not set("│─┃━┏┓┗┛") & set(header + line)  # plain columns, no box drawing


def test_json_and_yaml_never_carry_a_raw_control_character() -> None:
    data = {"message": OSC_TITLE + "\x9b" + ERASE_AND_FORGE + "\u202e"}
    for text in (to_json(data), to_json(data, indent=None), to_yaml(data)):
        assert all(char.isprintable() or char in "\n " for char in text), repr(text)
    assert json.loads(to_json(data)) == data
