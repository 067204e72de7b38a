"""Making text that an agent controls safe to put on an operator's terminal.

Log lines, event URLs, headers, command text and even names that come back from the
server can carry terminal escape sequences: OSC 0 retitles the window, OSC 52 writes the
clipboard, ``ESC[2K`` + CR erases a line so a forged one can take its place, and bidi
overrides reorder what the eye reads. Every character that is not printable is shown as a
visible escape instead (``\\x1b``, ``\\r``, ``\\u202e``), so nothing the agent wrote can
act on the terminal. The result is plain text: it is never parsed as rich markup, so
``[link=…]`` or ``[conceal]`` print literally.
"""

from __future__ import annotations

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def neutralise(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character (C0, DEL, C1, format and separator
    characters, unpaired surrogates) replaced by a visible escape; the space is kept, and
    so are the characters in ``keep`` (``"\n\t"`` for multi-line output)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in text)
