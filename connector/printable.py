"""Text from outside made safe for a terminal: control characters shown, never obeyed.

Ticket titles, ids, field values and server error texts are hostile: an `ESC [` sequence in a
title would recolour, move the cursor or rewrite what the operator reads (a fake "Applied: 0
close"), and a bidi override would reorder it. Every text output renders them as escapes
(`\\x1b`, `\\u202e`); JSON documents need nothing (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode bidi embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, *, newlines: bool = False) -> str:
    """`text` (or its str()) with every control character written as an escape.

    `newlines` keeps line breaks, for a message of several lines of our own.
    """
    if newlines:
        return "\n".join(_CONTROL.sub(_escape, line) for line in str(text).split("\n"))
    return _CONTROL.sub(_escape, str(text))
