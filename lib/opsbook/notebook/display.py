"""Showing things in a notebook (and, outside Jupyter, in plain text).

The one place that knows about IPython's display machinery, so that ``ops`` functions can show a
rendered manifest, a link or a plot without each carrying its own copy of this code. Every function
is a no-op-safe fallback to ``print`` outside IPython.
"""

from __future__ import annotations

import html
import json
from typing import Any

from opsbook.text import safe_text, shorten  # noqa: F401 - re-exported for the notebook API


def _ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


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


#: what a step that lists rows shows when the list is empty
NO_ROWS = "(none)"


def show_html(html_text: str, plain: str) -> None:
    """Show rich HTML in Jupyter and plain text in a terminal/headless log (both are kept)."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/html": html_text, "text/plain": plain}, raw=True)
            return
    except ImportError:
        pass
    print(plain)


def table_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"<p class='opsbook-empty'><em>{NO_ROWS}</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return NO_ROWS
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(str(c).ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        if isinstance(obj, dict):
            return {str(k): jsonable(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [jsonable(v) for v in obj]
        return repr(obj)
