"""Showing things in a notebook (and, outside Jupyter, in plain text).

The one place that knows about IPython's display machinery, so that ``ops`` functions can show a
rendered manifest, a link or a plot without each carrying its own copy of this code. Every function
is a no-op-safe fallback to ``print`` outside IPython.
"""

from __future__ import annotations

import html
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


def _ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


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


#: how a block of code looks in a notebook and in the record's HTML: monospace whatever the page's
#: stylesheet says (a Markdown code block is rendered in the body font by nbconvert's lab template)
CODE_STYLE = ("font-family:var(--jp-code-font-family, ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, "
              "monospace);font-size:0.85em;line-height:1.35;white-space:pre;overflow-x:auto;"
              "padding:6px 8px;margin:4px 0;background:var(--jp-layout-color2, #f5f5f5);border-radius:3px")


def code_html(text: str, lang: str = "yaml") -> str:
    """``text`` as an HTML ``<pre>`` block in a monospace font. Escaped, never syntax-highlighted: a
    highlighter splits a value into spans, and a secret split that way would escape the record's
    redaction (which finds each value as text, and as ``html.escape`` makes it)."""
    return (f"<pre class='opsbook-code' data-lang='{html.escape(lang)}' style=\"{CODE_STYLE}\">"
            f"{html.escape(text, quote=False)}</pre>")


def show_code(text: str, lang: str = "yaml") -> None:
    """A block of code or configuration (a rendered manifest, a Fluent Bit config ...): a monospace
    ``<pre>`` in a notebook and its HTML record, the text itself in a terminal or a text log."""
    if _ipython():
        from IPython.display import display

        display({"text/html": code_html(text, lang), "text/plain": text}, raw=True)
    else:
        print(text)


def show_link(url: str, label: str = "Open") -> None:
    if _ipython():
        from IPython.display import HTML, display

        u = html.escape(url)
        display(HTML(f'<p>{html.escape(label)}: <a href="{u}" target="_blank">{u}</a></p>'))
    else:
        print(f"{label}: {url}")


def show_png(png: bytes) -> None:
    if _ipython():
        from IPython.display import Image, display

        display(Image(data=png, format="png"))
