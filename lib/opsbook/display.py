"""Showing things in a notebook (and, outside Jupyter, in plain text).

The one place that knows about IPython's display machinery, so that ``ops`` functions can show a
rendered manifest, a link or a plot without each carrying its own copy of this code. Every function
is a no-op-safe fallback to ``print`` outside IPython.
"""

from __future__ import annotations

import html


def _ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_code(text: str, lang: str = "yaml") -> None:
    """A block of code or configuration (a rendered manifest, a Fluent Bit config ...)."""
    if _ipython():
        from IPython.display import Markdown, display

        display(Markdown(f"```{lang}\n{text}\n```"))
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
