"""Text for terminals, logs and tables: control characters made visible, one line cut at a word.

A leaf: every layer may import it."""

from __future__ import annotations

import re
from typing import Any

# What a terminal would act on rather than show: C0 controls but tab and newline (ESC starts colour,
# cursor and title sequences; CR rewrites the line), DEL, C1 (CSI, OSC as single bytes), and the
# Unicode line separators and bidirectional overrides that reorder what is shown.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONELINE = re.compile(_UNSAFE.pattern[:-1] + r"\t\n]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return {9: "\\t", 10: "\\n"}.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")


def safe_text(value: Any, *, markup: bool = True, oneline: bool = False) -> str:
    """``value`` as text that is safe to print to a terminal or CI log: every control character (ESC,
    CR, BEL, C1, bidi overrides...) is shown as an escape (``\\x1b``), never sent; with ``oneline``
    also newlines and tabs (``\\n``); with ``markup`` (for rich) square brackets are escaped so that
    ``[bold]`` in a notebook's title is shown as written. For strings a runbook, a targets file or
    any other input provides (titles, versions, objectives, help texts, names)."""
    text = "" if value is None else str(value)
    text = (_UNSAFE_ONELINE if oneline else _UNSAFE).sub(_visible, text)
    if markup:
        from rich.markup import escape

        text = escape(text)
    return text


def shorten(text: Any, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters: cut at the last word boundary that fits,
    marked with "…" (a single word longer than the limit is cut inside it)."""
    s = " ".join(str("" if text is None else text).split())
    if len(s) <= limit:
        return s
    if limit <= 1:
        return "…"[:max(limit, 0)]
    cut = s[: limit - 1]
    space = len(cut) if s[limit - 1] == " " else cut.rfind(" ")
    if space >= max(1, (limit - 1) // 2):  # a boundary in the second half: keep whole words
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"
